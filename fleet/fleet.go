// Package fleet owns kiln's machine records: who each machine is, which image
// it is assigned, its lifecycle state and the events of its boots.
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/store"
)

const bucket = "machines"

// maxEvents bounds each machine's event list. Older events are dropped,
// those of the latest boot last (see trimEvents).
const maxEvents = 200

// Errors callers match with errors.Is.
var (
	ErrNotFound = errors.New("machine not found")
	ErrExists   = errors.New("machine already exists")
	ErrInvalid  = errors.New("invalid machine")
)

// Machine is one machine record.
type Machine struct {
	MAC      string `json:"mac"`
	Hostname string `json:"hostname"`
	Image    string `json:"image"`
	State    State  `json:"state"`
	// IP is the address kiln's DHCP last gave the machine.
	IP string `json:"ip,omitempty"`
	// ReportedImage is the image the machine said it booted, at phone-home.
	ReportedImage string    `json:"reported_image,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	Created       time.Time `json:"created"`
	LastSeen      time.Time `json:"last_seen,omitzero"`
	Events        []Event   `json:"events"`
}

// Identity returns what the machine is told about itself.
func (m Machine) Identity() identity.Identity {
	return identity.Identity{Hostname: m.Hostname, MAC: m.MAC, IP: m.IP, Image: m.Image}
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
	// ImageExists, if set, is asked whether an image ID can be assigned.
	ImageExists func(id string) error
	Log         *slog.Logger     // nil discards
	Now         func() time.Time // nil is time.Now
}

// Fleet is the set of machines, persisted in a store.
type Fleet struct {
	st          store.Store
	imageExists func(string) error
	log         *slog.Logger
	now         func() time.Time
}

// New returns a Fleet over cfg.Store.
func New(cfg Config) (*Fleet, error) {
	if cfg.Store == nil {
		return nil, errors.New("fleet: no store")
	}
	f := &Fleet{st: cfg.Store, imageExists: cfg.ImageExists, log: cfg.Log, now: cfg.Now}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f, nil
}

// NewMachine is what an operator gives to register a machine.
type NewMachine struct {
	MAC      string `json:"mac"`
	Hostname string `json:"hostname"`
	Image    string `json:"image"`
}

// Add registers a machine in state assigned. The MAC and the hostname must
// both be unused.
func (f *Fleet) Add(nm NewMachine) (Machine, error) {
	mac, err := identity.NormalizeMAC(nm.MAC)
	if err != nil {
		return Machine{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := identity.ValidateHostname(nm.Hostname); err != nil {
		return Machine{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if nm.Image == "" {
		return Machine{}, fmt.Errorf("%w: image is empty", ErrInvalid)
	}
	if f.imageExists != nil {
		if err := f.imageExists(nm.Image); err != nil {
			return Machine{}, fmt.Errorf("%w: image %s: %w", ErrInvalid, nm.Image, err)
		}
	}
	now := f.now().UTC()
	m := Machine{
		MAC: mac, Hostname: nm.Hostname, Image: nm.Image, State: Assigned, Created: now,
		Events: []Event{{Time: now, Kind: EventAssigned, Detail: nm.Image}},
	}
	err = f.st.Update(func(tx store.Tx) error {
		if _, err := tx.Get(bucket, mac); err == nil {
			return fmt.Errorf("%w: mac %s", ErrExists, mac)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.ForEach(bucket, func(_ string, v []byte) error {
			var other Machine
			if err := json.Unmarshal(v, &other); err != nil {
				return err
			}
			if strings.EqualFold(other.Hostname, m.Hostname) {
				return fmt.Errorf("%w: hostname %s is used by %s", ErrExists, m.Hostname, other.MAC)
			}
			return nil
		}); err != nil {
			return err
		}
		return put(tx, m)
	})
	if err != nil {
		return Machine{}, err
	}
	f.log.Info("machine added", "mac", mac, "hostname", m.Hostname, "image", m.Image)
	return m, nil
}

// Get returns the machine with the given MAC (any notation).
func (f *Fleet) Get(mac string) (Machine, error) {
	key, err := identity.NormalizeMAC(mac)
	if err != nil {
		return Machine{}, fmt.Errorf("%w: %w", ErrInvalid, err)
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
		return tx.ForEach(bucket, func(_ string, v []byte) error {
			var m Machine
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// Delete removes a machine record.
func (f *Fleet) Delete(mac string) error {
	key, err := identity.NormalizeMAC(mac)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	err = f.st.Update(func(tx store.Tx) error {
		if _, err := get(tx, key); err != nil {
			return err
		}
		return tx.Delete(bucket, key)
	})
	if err == nil {
		f.log.Info("machine deleted", "mac", key)
	}
	return err
}

// Observe records that kind happened to the machine and applies the state
// transition it implies. Unknown MACs return ErrNotFound and record
// nothing, without a write transaction: DHCP reports every client it
// serves, most of which kiln does not know.
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
	return f.modify(mac, func(m *Machine) error {
		now := f.now().UTC()
		for _, o := range obs {
			next, err := transition(m.State, o.Kind)
			if err != nil {
				return err
			}
			if o.Kind == EventAcked && o.Detail != "" {
				m.IP = o.Detail
			}
			if next != m.State {
				f.log.Info("machine state", "mac", m.MAC, "from", m.State, "to", next, "event", o.Kind)
				m.State = next
			}
			m.Reason = ""
			m.addEvent(now, o.Kind, o.Detail)
		}
		return nil
	})
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

// Report records a machine's phone-home: it booted the image with ID
// reported. The machine becomes ready if that is its assigned image, and
// failed, with the reason, if not.
func (f *Fleet) Report(mac, reported string) (Machine, error) {
	return f.modify(mac, func(m *Machine) error {
		kind, detail := EventReady, reported
		if reported != m.Image {
			kind, detail = EventFailed, fmt.Sprintf("booted image %s, assigned %s", reported, m.Image)
		}
		next, err := transition(m.State, kind)
		if err != nil {
			return err
		}
		f.log.Info("machine state", "mac", m.MAC, "from", m.State, "to", next, "image", reported)
		m.State = next
		m.ReportedImage = reported
		m.Reason = ""
		if kind == EventFailed {
			m.Reason = detail
		}
		m.addEvent(f.now().UTC(), kind, detail)
		return nil
	})
}

func (f *Fleet) modify(mac string, fn func(*Machine) error) (Machine, error) {
	key, err := identity.NormalizeMAC(mac)
	if err != nil {
		return Machine{}, fmt.Errorf("%w: %w", ErrInvalid, err)
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
		if err := fn(&m); err != nil {
			return err
		}
		m.LastSeen = f.now().UTC()
		return put(tx, m)
	})
	return m, err
}

func (m *Machine) addEvent(t time.Time, kind EventKind, detail string) {
	m.Events = trimEvents(append(m.Events, Event{Time: t, Kind: kind, Detail: detail}), maxEvents)
}

func get(tx store.Tx, key string) (Machine, error) {
	v, err := tx.Get(bucket, key)
	if errors.Is(err, store.ErrNotFound) {
		return Machine{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	if err := json.Unmarshal(v, &m); err != nil {
		return Machine{}, fmt.Errorf("decoding machine %s: %w", key, err)
	}
	return m, nil
}

func put(tx store.Tx, m Machine) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding machine %s: %w", m.MAC, err)
	}
	return tx.Put(bucket, m.MAC, b)
}
