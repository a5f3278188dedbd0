package fleet

import (
	"errors"
	"fmt"
)

// State is a machine's lifecycle state.
type State string

// The lifecycle states. A MAC kiln saw but nobody registered is
// discovered and boots nothing. A registered machine is assigned until its
// first boot; booting once kiln has handed it a boot script (its image from
// the network, or its installed disk); installing while the installer writes
// its generation to the disk, installed once the installer verified it, and
// ready once it phoned home with its image. It is failed when it reported
// another image or the install failed, and retired when the operator took it
// out of service: it boots nothing and its tokens are dead.
const (
	Discovered State = "discovered"
	Assigned   State = "assigned"
	Booting    State = "booting"
	Installing State = "installing"
	Installed  State = "installed"
	Ready      State = "ready"
	Failed     State = "failed"
	Retired    State = "retired"
)

// States returns every state in lifecycle order.
func States() []State {
	return []State{Discovered, Assigned, Booting, Installing, Installed, Ready, Failed, Retired}
}

// EventKind names what happened to a machine.
type EventKind string

// Event kinds, in the order of a boot.
const (
	EventAssigned EventKind = "assigned"
	EventOffered  EventKind = "offered"  // DHCP offered an address
	EventAcked    EventKind = "acked"    // DHCP acknowledged the lease; detail is the IP
	EventFirstHop EventKind = "firsthop" // the firmware fetched its first-stage file over TFTP or HTTP Boot; detail names it
	EventScript   EventKind = "script"   // the iPXE script for the image was served
	EventKernel   EventKind = "kernel"   // the kernel was fetched
	EventInitrd   EventKind = "initrd"   // the initrd was fetched
	EventRoot     EventKind = "root"     // the root image (squashfs) was fetched
	EventIdentity EventKind = "identity" // the identity was served
	EventReady    EventKind = "ready"    // phone-home with the assigned image
	EventFailed   EventKind = "failed"   // phone-home with another image, or a failed install
)

// Lifecycle event kinds. Only fleet's operations record them (Observe
// refuses them): each is the state change of one operation.
const (
	EventDiscovered EventKind = "discovered" // an unknown MAC was seen (Discover)
	EventGeneration EventKind = "generation" // Replace, Reimage or Rollback made a generation; detail "replace generation N: image X"
	EventInstalling EventKind = "installing" // the boot script runs the installer (StartBoot)
	EventInstalled  EventKind = "installed"  // the installer verified the disk (ReportInstall)
	EventDiskBoot   EventKind = "diskboot"   // the boot script boots the installed disk (StartBoot)
	EventRetired    EventKind = "retired"    // the machine was retired (Retire)
)

// ErrTransition is returned for an event or operation that is not allowed
// in the machine's current state.
var ErrTransition = errors.New("invalid state transition")

// bootable are the states a boot can start from.
var bootable = []State{Assigned, Booting, Installing, Installed, Ready, Failed}

// transitions is the lifecycle: for each state, the events that change it
// and the state they lead to. An event that is neither here nor in
// keepState is not allowed in that state. The pseudo-state "" is a MAC
// without a record.
var transitions = func() map[State]map[EventKind]State {
	t := map[State]map[EventKind]State{}
	add := func(from State, kind EventKind, to State) {
		if t[from] == nil {
			t[from] = map[EventKind]State{}
		}
		t[from][kind] = to
	}
	add("", EventDiscovered, Discovered) // Discover
	add("", EventAssigned, Assigned)     // Create
	add(Discovered, EventAssigned, Assigned)
	for _, s := range bootable {
		add(s, EventScript, Booting)        // StartBoot: network or UKI, or the legacy Observe
		add(s, EventDiskBoot, Booting)      // StartBoot: installed disk
		add(s, EventInstalling, Installing) // StartBoot: installer
		add(s, EventGeneration, s)          // Replace, Reimage, Rollback keep the state
	}
	add(Installing, EventInstalled, Installed) // ReportInstall ok
	add(Installing, EventFailed, Failed)       // ReportInstall failed
	add(Booting, EventReady, Ready)            // Report: the image of the boot's generation
	add(Booting, EventFailed, Failed)          // Report: another image
	for _, s := range States() {
		if s != Retired {
			add(s, EventRetired, Retired)
		}
	}
	return t
}()

// keepState are the events of a boot's progress: allowed in every state,
// they change none.
var keepState = map[EventKind]bool{
	EventOffered: true, EventAcked: true, EventFirstHop: true, EventKernel: true,
	EventInitrd: true, EventRoot: true, EventIdentity: true,
}

// operationOnly are the events only fleet's operations record, never
// Observe: ready and failed come with Report, which also closes the boot's
// session (its token dies with it).
var operationOnly = map[EventKind]bool{
	EventAssigned: true, EventDiscovered: true, EventGeneration: true, EventInstalling: true,
	EventInstalled: true, EventDiskBoot: true, EventRetired: true, EventReady: true, EventFailed: true,
}

// transition returns the state after kind happens in state from.
func transition(from State, kind EventKind) (State, error) {
	if to, ok := transitions[from][kind]; ok {
		return to, nil
	}
	if keepState[kind] {
		return from, nil
	}
	if operationOnly[kind] || kind == EventScript {
		reason := ""
		if kind == EventReady || kind == EventFailed {
			reason = " (no boot in progress)"
		}
		return from, fmt.Errorf("%w: %s in state %s%s", ErrTransition, kind, stateName(from), reason)
	}
	return from, fmt.Errorf("%w: unknown event %q", ErrTransition, kind)
}

func stateName(s State) string {
	if s == "" {
		return "(no record)"
	}
	return string(s)
}
