// Package fleet owns kiln's machine records: who each machine is, which image
// it is assigned, its lifecycle state and the events of its boots.
//
// A machine is never edited in place. Every change (Replace, Reimage,
// Rollback) makes a new immutable Generation; the machine boots it afresh
// on its next boot, and the generation that last reported ready stays
// visible until then. Every boot is a session with its own token
// (StartBoot, CheckToken), which dies when the boot ends.
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/store"
)

const bucket = "machines"

// maxEvents bounds each machine's event list. Older events are dropped,
// those of the latest boot last (see trimEvents).
const maxEvents = 200

// Bounds of a record's history.
const (
	maxGenerations = 10  // Machine.Generations keeps the newest
	maxAudit       = 100 // Machine.Audit keeps the newest
)

// Defaults of Config.
const (
	DefaultBootTimeout   = 30 * time.Minute
	DefaultMaxDiscovered = 4096
)

// Errors callers match with errors.Is.
var (
	ErrNotFound = errors.New("machine not found")
	ErrExists   = errors.New("machine already exists")
	ErrInvalid  = errors.New("invalid machine")
	// ErrForbidden is CheckToken's and IssueDiskToken's refusal; the
	// error's text says why (no token, expired, another machine's...).
	ErrForbidden = errors.New("forbidden")
)

// Mode is how a machine boots.
type Mode string

// Boot modes. The empty Mode is Stateless.
const (
	// Stateless machines boot their image from the network on every boot.
	Stateless Mode = "stateless"
	// Install machines run kiln's installer once per generation, which
	// writes the image to the disk; later boots boot the disk.
	Install Mode = "install"
)

// Machine is one machine record. Hostname and Image always mirror the
// current generation's.
type Machine struct {
	MAC string `json:"mac"`
	// MachineID is random at the first Create and stable for the machine's
	// lifetime, across generations.
	MachineID string `json:"machine_id"`
	Hostname  string `json:"hostname"`
	Image     string `json:"image"`
	Mode      Mode   `json:"mode"`
	State     State  `json:"state"`
	// Generation is the current (desired) generation, Generations[len-1].N;
	// 0 only for discovered machines.
	Generation int `json:"generation"`
	// Generations are the newest generations (at most 10), oldest first.
	Generations []Generation `json:"generations"`
	// Running is the generation that last reported ready, RunningImage
	// its image; 0 and "" before the first ready.
	Running      int    `json:"running_generation,omitempty"`
	RunningImage string `json:"running_image,omitempty"`
	// ReimagePending is set while the machine has not booted its current
	// generation to ready (Generation != Running), or, in install mode,
	// while that generation is not installed on its disk.
	ReimagePending bool `json:"reimage_pending"`
	// Installed is, in install mode, the generation the installer
	// verified on the disk; 0 means the disk must not be booted.
	Installed int `json:"installed_generation,omitempty"`
	// Boot is the boot in progress, if any.
	Boot *BootSession `json:"boot,omitempty"`
	// IP is the address kiln's DHCP last gave the machine.
	IP string `json:"ip,omitempty"`
	// ReportedImage is the image the machine said it booted, at phone-home.
	ReportedImage string       `json:"reported_image,omitempty"`
	Reason        string       `json:"reason,omitempty"`
	Created       time.Time    `json:"created"`
	LastSeen      time.Time    `json:"last_seen,omitzero"`
	Events        []Event      `json:"events"`
	Audit         []AuditEntry `json:"audit"`
	// DiskTokenHash is the SHA-256 (hex) of the disk credential of
	// generation DiskTokenGeneration (IssueDiskToken). Stored, never in
	// the API's JSON.
	DiskTokenHash       string `json:"-"`
	DiskTokenGeneration int    `json:"disk_token_generation,omitempty"`
}

// Generation is one immutable version of a machine: an image and an
// identity. It is never edited.
type Generation struct {
	N     int    `json:"n"`
	Image string `json:"image"`
	// Identity has Hostname, MAC, MachineID, Generation and Image filled in.
	Identity identity.Identity `json:"identity"`
	Created  time.Time         `json:"created"`
	// Op made the generation: create, replace, reimage or rollback.
	Op string `json:"op"`
}

// AuditEntry records one operator operation on a machine.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Actor is who asked (the API caller); "unknown" when not known.
	Actor string `json:"actor"`
	// Op is create, replace, reimage, rollback or retire.
	Op     string `json:"op"`
	From   int    `json:"from_generation"`
	To     int    `json:"to_generation"`
	Detail string `json:"detail,omitempty"`
}

// Identity returns what the machine is told about itself: its current
// generation's identity, with the address of its lease when the identity
// fixes none.
func (m Machine) Identity() identity.Identity {
	g, ok := m.generation(m.Generation)
	if !ok {
		return identity.Identity{Hostname: m.Hostname, MAC: m.MAC, IP: leaseIPv4(m.IP), Image: m.Image, MachineID: m.MachineID}
	}
	id := g.Identity
	if id.IP == "" {
		id.IP = leaseIPv4(m.IP)
	}
	return id
}

// leaseIPv4 is ip if it is an IPv4 address: the identity's ip is the IPv4
// lease, and a DHCPv6 lease also sets the record's IP (until the next
// DHCPv4 one).
func leaseIPv4(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is4() {
		return ip
	}
	return ""
}

// generation returns generation n of the machine, if it is still kept.
func (m Machine) generation(n int) (Generation, bool) {
	for _, g := range m.Generations {
		if g.N == n {
			return g, true
		}
	}
	return Generation{}, false
}

// Event is one thing that happened to a machine.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   EventKind `json:"kind"`
	Detail string    `json:"detail,omitempty"`
}

// Config configures a Fleet. Zero fields take defaults.
type Config struct {
	Store store.Store // required
	// ImageExists, if set, is asked whether an image ID can be assigned
	// (Create, Replace, Rollback).
	ImageExists func(id string) error
	Log         *slog.Logger     // nil discards
	Now         func() time.Time // nil is time.Now
	// BootTimeout is how long a boot's token is valid; 0 is
	// DefaultBootTimeout.
	BootTimeout time.Duration
	// MaxDiscovered caps the discovered records, so that a flood of MACs
	// cannot fill the disk; 0 is DefaultMaxDiscovered.
	MaxDiscovered int
}

// Fleet is the set of machines, persisted in a store.
type Fleet struct {
	st            store.Store
	imageExists   func(string) error
	log           *slog.Logger
	now           func() time.Time
	bootTimeout   time.Duration
	maxDiscovered int
}

// New returns a Fleet over cfg.Store.
func New(cfg Config) (*Fleet, error) {
	if cfg.Store == nil {
		return nil, errors.New("fleet: no store")
	}
	if cfg.BootTimeout < 0 || cfg.MaxDiscovered < 0 {
		return nil, fmt.Errorf("fleet: negative boot timeout %v or discovered cap %d", cfg.BootTimeout, cfg.MaxDiscovered)
	}
	f := &Fleet{st: cfg.Store, imageExists: cfg.ImageExists, log: cfg.Log, now: cfg.Now,
		bootTimeout: cfg.BootTimeout, maxDiscovered: cfg.MaxDiscovered}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.bootTimeout == 0 {
		f.bootTimeout = DefaultBootTimeout
	}
	if f.maxDiscovered == 0 {
		f.maxDiscovered = DefaultMaxDiscovered
	}
	return f, nil
}

// Get returns the machine with the given MAC (any notation).
func (f *Fleet) Get(mac string) (Machine, error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	err = f.st.View(func(tx store.Tx) error {
		m, err = get(tx, key)
		return err
	})
	return m, err
}

// List returns every machine, ordered by MAC.
func (f *Fleet) List() ([]Machine, error) {
	var out []Machine
	err := f.st.View(func(tx store.Tx) error {
		return tx.ForEach(bucket, func(key string, v []byte) error {
			m, err := decode(key, v)
			if err != nil {
				return err
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// Delete removes a machine record, in any state.
func (f *Fleet) Delete(mac string) error { return f.DeleteBy(mac, "") }

// DeleteBy removes a machine record, in any state, and logs who did. The
// record and its audit trail are gone: Retire keeps them.
func (f *Fleet) DeleteBy(mac, actor string) error {
	key, err := normalizeMAC(mac)
	if err != nil {
		return err
	}
	var m Machine
	err = f.st.Update(func(tx store.Tx) error {
		if m, err = get(tx, key); err != nil {
			return err
		}
		return tx.Delete(bucket, key)
	})
	if err == nil {
		f.log.Info("machine deleted", "mac", key, "actor", actorName(actor), "state", m.State, "generation", m.Generation)
	}
	return err
}

// Observe records that kind happened to the machine and applies the state
// transition it implies. Unknown MACs return ErrNotFound and record
// nothing, without a write transaction: DHCP reports every client it
// serves, most of which kiln does not know.
//
// Observe records a boot's progress (offered, acked, firsthop, kernel,
// initrd, root, identity). It still accepts script, which starts a boot
// without a session (StartBoot is the way with one), but refuses the
// events of fleet's operations (ready and failed come with Report).
func (f *Fleet) Observe(mac string, kind EventKind, detail string) (Machine, error) {
	return f.ObserveAll(mac, Observation{Kind: kind, Detail: detail})
}

// Observation is one event for ObserveAll.
type Observation struct {
	Kind   EventKind
	Detail string
}

// ObserveAll records several events, in order, in one transaction, as
// Observe does for one: either all are recorded or, if one is not allowed
// in the state the earlier ones lead to, none is.
func (f *Fleet) ObserveAll(mac string, obs ...Observation) (Machine, error) {
	for _, o := range obs {
		if operationOnly[o.Kind] {
			return Machine{}, fmt.Errorf("%w: %s is recorded by fleet's operations, not observed (machine %s)", ErrTransition, o.Kind, mac)
		}
	}
	// Discovered and retired machines boot nothing: their events are
	// checked but not recorded, so that their DHCP chatter (a flood of
	// MACs) costs no write transaction.
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	if err := f.st.View(func(tx store.Tx) error {
		m, err = get(tx, key)
		return err
	}); err != nil {
		return Machine{}, err
	}
	if bootsNothing(m) {
		for _, o := range obs {
			if _, err := transition(m.State, o.Kind); err != nil {
				return Machine{}, fmt.Errorf("machine %s: %w", m.MAC, err)
			}
		}
		return m, nil
	}
	return f.modify(key, func(m *Machine) error {
		now := f.now().UTC()
		for _, o := range obs {
			if err := f.step(m, now, o.Kind, o.Detail); err != nil {
				return err
			}
			if o.Kind == EventAcked && o.Detail != "" {
				m.IP = o.Detail
			}
		}
		return nil
	})
}

// step applies the transition of kind to m, logs a state change and
// records the event.
func (f *Fleet) step(m *Machine, now time.Time, kind EventKind, detail string) error {
	next, err := transition(m.State, kind)
	if err != nil {
		return fmt.Errorf("machine %s: %w", m.MAC, err)
	}
	if next != m.State {
		f.log.Info("machine state", "mac", m.MAC, "from", stateName(m.State), "to", next, "event", kind, "generation", m.Generation)
		m.State = next
		if next != Failed {
			m.Reason = ""
		}
	}
	if kind == EventScript {
		m.Reason = ""
	}
	m.addEvent(now, kind, detail)
	return nil
}

// CountByState returns how many machines are in each state, e.g. for the
// kiln_machines metric. It decodes only the state of each record.
func (f *Fleet) CountByState() (map[string]int, error) {
	counts := map[string]int{}
	err := f.st.View(func(tx store.Tx) error {
		return tx.ForEach(bucket, func(key string, v []byte) error {
			var m struct {
				State State `json:"state"`
			}
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decoding machine %s: %w", key, err)
			}
			counts[string(m.State)]++
			return nil
		})
	})
	return counts, err
}

// errNoWrite, returned by a modify function, ends the transaction without
// writing; modify returns the machine as it was and no error.
var errNoWrite = errors.New("no write")

// modify is modifyTx for what a machine does: it sets LastSeen.
func (f *Fleet) modify(mac string, fn func(*Machine) error) (Machine, error) {
	return f.modifyTx(mac, true, func(_ store.Tx, m *Machine) error { return fn(m) })
}

// modifyTx reads the machine, lets fn change it in the write transaction
// tx and writes it back, unless fn fails (nothing is written) or returns
// errNoWrite. seen sets LastSeen (the machine did something, not an
// operator). An unknown MAC costs no write transaction.
func (f *Fleet) modifyTx(mac string, seen bool, fn func(store.Tx, *Machine) error) (Machine, error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	// A read transaction first: it neither waits for nor blocks the
	// writers (the DHCP lease commits), so an unknown MAC costs no write
	// transaction. The record is read again under the write lock.
	if err := f.st.View(func(tx store.Tx) error {
		_, err := tx.Get(bucket, key)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		return err
	}); err != nil {
		return Machine{}, err
	}
	var m Machine
	err = f.st.Update(func(tx store.Tx) error {
		if m, err = get(tx, key); err != nil {
			return err
		}
		if err := fn(tx, &m); err != nil {
			return err
		}
		if seen {
			m.LastSeen = f.now().UTC()
		}
		return put(tx, m)
	})
	if errors.Is(err, errNoWrite) {
		return m, nil
	}
	return m, err
}

func (m *Machine) addEvent(t time.Time, kind EventKind, detail string) {
	m.Events = trimEvents(append(m.Events, Event{Time: t, Kind: kind, Detail: detail}), maxEvents)
}
