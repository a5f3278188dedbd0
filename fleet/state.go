package fleet

import (
	"errors"
	"fmt"
)

// State is a machine's lifecycle state.
type State string

// The states of this version. A machine is assigned when registered, booting
// once kiln has handed it a boot script for its image, and ready once it
// phoned home with that image. It is failed when it reported another image.
const (
	Assigned State = "assigned"
	Booting  State = "booting"
	Ready    State = "ready"
	Failed   State = "failed"
)

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
	EventFailed   EventKind = "failed"   // phone-home with another image
)

// ErrTransition is returned for an event that is not allowed in the
// machine's current state.
var ErrTransition = errors.New("invalid state transition")

// transition returns the state after kind happens in state from.
func transition(from State, kind EventKind) (State, error) {
	switch kind {
	case EventScript:
		// Serving the boot script starts a boot from any state: a ready
		// machine that reboots boots its image afresh.
		return Booting, nil
	case EventReady, EventFailed:
		if from != Booting {
			return from, fmt.Errorf("%w: %s in state %s (no boot in progress)", ErrTransition, kind, from)
		}
		if kind == EventReady {
			return Ready, nil
		}
		return Failed, nil
	case EventOffered, EventAcked, EventFirstHop, EventKernel, EventInitrd, EventRoot, EventIdentity:
		return from, nil
	}
	return from, fmt.Errorf("%w: unknown event %q", ErrTransition, kind)
}
