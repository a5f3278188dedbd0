package fleet

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/store"
)

// NewMachine is what an operator gives to register a machine (Create) or
// to give it a new generation (Replace).
type NewMachine struct {
	MAC      string `json:"mac"`
	Hostname string `json:"hostname"`
	Image    string `json:"image"`
	// Mode is the boot mode; "" is Stateless for Create and the machine's
	// current mode for Replace.
	Mode Mode `json:"mode,omitempty"`
	// Identity holds the optional identity fields (domain, macs,
	// addresses, gateway, dns, ssh keys, labels). Its hostname, mac and
	// image may be left empty (they come from the fields above), stand in
	// for empty fields above, or must equal them; machine_id and
	// generation are kiln's to set.
	Identity *identity.Identity `json:"identity,omitempty"`
}

// Add registers a machine in state assigned: Create(nm, "").
func (f *Fleet) Add(nm NewMachine) (Machine, error) { return f.Create(nm, "") }

// Create registers a machine, generation 1, in state assigned, with a
// new random machine ID. The MAC must not belong to another record, except
// a discovered one, which becomes the machine; the hostname must not be
// used by another machine that is not retired (case-insensitively). The
// identity is validated by identity.Validate. On error nothing is written.
func (f *Fleet) Create(nm NewMachine, actor string) (Machine, error) {
	mac, err := normalizeMAC(nm.MAC)
	if err != nil {
		return Machine{}, err
	}
	mode, err := checkMode(nm.Mode)
	if err != nil {
		return Machine{}, err
	}
	if mode == "" {
		mode = Stateless
	}
	hostname, image := nm.Hostname, nm.Image
	if nm.Identity != nil {
		hostname, image = cmp.Or(hostname, nm.Identity.Hostname), cmp.Or(image, nm.Identity.Image)
	}
	machineID := newMachineID()
	gen, err := f.newGeneration(mac, nm, hostname, image, machineID, 1, "create")
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	err = f.st.Update(func(tx store.Tx) error {
		m, err = get(tx, mac)
		switch {
		case errors.Is(err, ErrNotFound):
			m = Machine{MAC: mac, Created: gen.Created}
		case err != nil:
			return err
		case m.State != Discovered:
			return fmt.Errorf("%w: mac %s is already registered (hostname %s, state %s)", ErrExists, mac, m.Hostname, m.State)
		}
		if err := checkHostname(tx, mac, gen.Identity.Hostname); err != nil {
			return err
		}
		m.MachineID, m.Mode = machineID, mode
		m.Hostname, m.Image = gen.Identity.Hostname, gen.Image
		m.Generation, m.Generations = 1, []Generation{gen}
		if err := f.step(&m, gen.Created, EventAssigned, gen.Image); err != nil {
			return err
		}
		m.updatePending()
		m.audit(gen.Created, actor, "create", 0, 1, "image "+gen.Image)
		return put(tx, m)
	})
	if err != nil {
		return Machine{}, err
	}
	f.log.Info("machine created", "mac", mac, "hostname", m.Hostname, "image", m.Image, "mode", m.Mode, "actor", actorName(actor))
	return m, nil
}

// Replace makes generation N+1 of the machine from nm: its image and
// identity (validated as in Create; nm.MAC, when set, must be the
// machine's). An empty Hostname, Image or Mode keeps the current one, a
// nil Identity the current identity's optional fields. The machine's state
// does not change and nothing is pushed to it: it is re-image pending, and
// its running generation stays visible until the new one reports ready.
func (f *Fleet) Replace(mac string, nm NewMachine, actor string) (Machine, error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	if nm.MAC != "" {
		if other, err := normalizeMAC(nm.MAC); err != nil {
			return Machine{}, err
		} else if other != key {
			return Machine{}, fmt.Errorf("%w: mac %s of the new generation is not the machine's %s", ErrInvalid, other, key)
		}
	}
	mode, err := checkMode(nm.Mode)
	if err != nil {
		return Machine{}, err
	}
	return f.newGenerationOp(key, actor, "replace", func(m *Machine) (Generation, string, error) {
		cur, _ := m.generation(m.Generation)
		hostname, image := nm.Hostname, nm.Image
		if nm.Identity != nil {
			hostname, image = cmp.Or(hostname, nm.Identity.Hostname), cmp.Or(image, nm.Identity.Image)
		}
		hostname, image = cmp.Or(hostname, m.Hostname), cmp.Or(image, m.Image)
		if nm.Identity == nil {
			id := cur.Identity
			nm.Identity = &id
			nm.Identity.Hostname, nm.Identity.Image = "", ""
			nm.Identity.MachineID, nm.Identity.Generation = "", 0
		}
		g, err := f.newGeneration(key, nm, hostname, image, m.MachineID, m.Generation+1, "replace")
		if err != nil {
			return Generation{}, "", err
		}
		detail := "image " + g.Image
		if mode != "" && mode != m.mode() {
			detail += ", mode " + string(mode)
			m.Mode = mode
		}
		return g, detail, nil
	})
}

// Reimage makes generation N+1 of the machine a copy of generation N:
// the machine boots its image afresh, and in install mode installs it
// again. It is re-image pending until then.
func (f *Fleet) Reimage(mac, actor string) (Machine, error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	return f.newGenerationOp(key, actor, "reimage", func(m *Machine) (Generation, string, error) {
		cur, ok := m.generation(m.Generation)
		if !ok {
			return Generation{}, "", fmt.Errorf("%w: machine %s has no generation %d", ErrInvalid, key, m.Generation)
		}
		return copyGeneration(cur, m.Generation+1, "reimage", f.now().UTC()), "image " + cur.Image, nil
	})
}

// Rollback makes generation N+1 of the machine a copy of generation N-1
// (image and identity). It fails with ErrTransition at generation 1, and
// with ErrInvalid when N-1's image is no longer in the image store
// (Config.ImageExists) or was dropped from the record's history.
func (f *Fleet) Rollback(mac, actor string) (Machine, error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	return f.newGenerationOp(key, actor, "rollback", func(m *Machine) (Generation, string, error) {
		if m.Generation < 2 {
			return Generation{}, "", fmt.Errorf("%w: machine %s is at generation %d: there is no earlier generation to roll back to",
				ErrTransition, key, m.Generation)
		}
		prev, ok := m.generation(m.Generation - 1)
		if !ok {
			return Generation{}, "", fmt.Errorf("%w: machine %s: generation %d is no longer kept", ErrInvalid, key, m.Generation-1)
		}
		if err := f.checkImage(prev.Image); err != nil {
			return Generation{}, "", fmt.Errorf("rolling back %s to generation %d: %w", key, prev.N, err)
		}
		return copyGeneration(prev, m.Generation+1, "rollback", f.now().UTC()), fmt.Sprintf("to generation %d", prev.N), nil
	})
}

// newGenerationOp appends the generation build returns to the machine,
// checks its hostname against the other machines, audits and records it.
func (f *Fleet) newGenerationOp(key, actor, op string, build func(*Machine) (Generation, string, error)) (Machine, error) {
	m, err := f.modifyTx(key, false, func(tx store.Tx, m *Machine) error {
		if m.State == Discovered || m.State == Retired {
			return fmt.Errorf("%w: %s of machine %s in state %s (create a discovered machine; a retired one is done)",
				ErrTransition, op, key, m.State)
		}
		g, detail, err := build(m)
		if err != nil {
			return err
		}
		if err := checkHostname(tx, key, g.Identity.Hostname); err != nil {
			return err
		}
		from := m.Generation
		if err := f.step(m, g.Created, EventGeneration, fmt.Sprintf("%s generation %d: image %s", op, g.N, g.Image)); err != nil {
			return err
		}
		m.Generations = append(m.Generations, g)
		if n := len(m.Generations) - maxGenerations; n > 0 {
			m.Generations = append([]Generation(nil), m.Generations[n:]...)
		}
		m.Generation, m.Hostname, m.Image = g.N, g.Identity.Hostname, g.Image
		m.updatePending()
		m.audit(g.Created, actor, op, from, g.N, detail)
		return nil
	})
	if err != nil {
		return Machine{}, err
	}
	f.log.Info("machine generation", "mac", key, "op", op, "generation", m.Generation, "image", m.Image,
		"running_generation", m.Running, "actor", actorName(actor))
	return m, nil
}

// Retire takes the machine out of service: it boots nothing from now on,
// its boot in progress and its disk credential are dead. The record and
// its history stay (Delete removes them).
func (f *Fleet) Retire(mac, actor string) (Machine, error) {
	m, err := f.modifyTx(mac, false, func(_ store.Tx, m *Machine) error {
		now := f.now().UTC()
		if err := f.step(m, now, EventRetired, ""); err != nil {
			return err
		}
		m.Boot, m.DiskTokenHash, m.DiskTokenGeneration = nil, "", 0
		m.audit(now, actor, "retire", m.Generation, m.Generation, "")
		return nil
	})
	if err == nil {
		f.log.Info("machine retired", "mac", m.MAC, "hostname", m.Hostname, "actor", actorName(actor))
	}
	return m, err
}

// Discover records a MAC kiln saw (a DHCP client, a boot script request)
// that it does not know, in state discovered: it boots nothing until an
// operator creates it. A known MAC costs no write transaction; created is
// true only when the record is new. At most Config.MaxDiscovered
// discovered records are kept: beyond, Discover fails and writes nothing.
func (f *Fleet) Discover(mac string) (m Machine, created bool, err error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, false, err
	}
	// vacant returns errNoWrite when key has no record and there is room
	// for one more discovered machine; nil, with m set, when it has one.
	vacant := func(tx store.Tx) error {
		if m, err = get(tx, key); err == nil || !errors.Is(err, ErrNotFound) {
			return err
		}
		if n, err := countDiscovered(tx); err != nil {
			return err
		} else if n >= f.maxDiscovered {
			return fmt.Errorf("discovering %s: %d discovered machines are recorded, the most kept", key, f.maxDiscovered)
		}
		return errNoWrite
	}
	if err = f.st.View(vacant); !errors.Is(err, errNoWrite) {
		return m, false, err
	}
	err = f.st.Update(func(tx store.Tx) error {
		if err := vacant(tx); !errors.Is(err, errNoWrite) {
			return err
		}
		now := f.now().UTC()
		m = Machine{MAC: key, Created: now, LastSeen: now}
		if err := f.step(&m, now, EventDiscovered, ""); err != nil {
			return err
		}
		created = true
		return put(tx, m)
	})
	if created && err == nil {
		f.log.Info("machine discovered", "mac", key)
	}
	return m, created && err == nil, err
}

// discoveredMark is how a stored discovered record says its state. The
// quotes of a string value are escaped in JSON, so it cannot appear inside
// one.
var discoveredMark = []byte(`"state":"discovered"`)

func countDiscovered(tx store.Tx) (int, error) {
	n := 0
	err := tx.ForEach(bucket, func(_ string, v []byte) error {
		if bytes.Contains(v, discoveredMark) {
			n++
		}
		return nil
	})
	return n, err
}

// PinnedImages returns the images the image store must keep: those of
// every machine's current generation, its previous generation (N-1, for a
// rollback), its running generation and its boot in progress. Retired and
// discovered machines pin nothing.
func (f *Fleet) PinnedImages() (map[string]bool, error) {
	pinned := map[string]bool{}
	err := f.st.View(func(tx store.Tx) error {
		return tx.ForEach(bucket, func(key string, v []byte) error {
			m, err := decode(key, v)
			if err != nil {
				return err
			}
			if m.State == Retired || m.State == Discovered {
				return nil
			}
			pin := func(image string) {
				if image != "" {
					pinned[image] = true
				}
			}
			pin(m.Image)
			pin(m.RunningImage)
			for _, g := range m.Generations {
				if g.N == m.Generation-1 || g.N == m.Running || m.Boot != nil && g.N == m.Boot.Generation {
					pin(g.Image)
				}
			}
			return nil
		})
	})
	return pinned, err
}

// newGeneration validates nm as generation n of the machine with MAC mac
// and returns it.
func (f *Fleet) newGeneration(mac string, nm NewMachine, hostname, image, machineID string, n int, op string) (Generation, error) {
	var id identity.Identity
	if nm.Identity != nil {
		id = *nm.Identity
	}
	for _, c := range []struct{ field, got, want string }{
		{"hostname", id.Hostname, hostname}, {"image", id.Image, image},
	} {
		if c.got != "" && c.got != c.want {
			return Generation{}, fmt.Errorf("%w: identity %s %q is not the machine's %q", ErrInvalid, c.field, c.got, c.want)
		}
	}
	if id.MAC != "" {
		if m, err := identity.NormalizeMAC(id.MAC); err != nil || m != mac {
			return Generation{}, fmt.Errorf("%w: identity mac %q is not the machine's %s", ErrInvalid, id.MAC, mac)
		}
	}
	if id.MachineID != "" || id.Generation != 0 {
		return Generation{}, fmt.Errorf("%w: identity machine_id and generation are kiln's to set", ErrInvalid)
	}
	id.Hostname, id.MAC, id.Image, id.MachineID, id.Generation = hostname, mac, image, machineID, n
	if err := identity.ValidateHostname(hostname); err != nil {
		return Generation{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if image == "" {
		return Generation{}, fmt.Errorf("%w: image is empty", ErrInvalid)
	}
	if err := id.Validate(); err != nil {
		return Generation{}, fmt.Errorf("%w: identity of %s: %w", ErrInvalid, mac, err)
	}
	if err := f.checkImage(image); err != nil {
		return Generation{}, err
	}
	return Generation{N: n, Image: image, Identity: id, Created: f.now().UTC(), Op: op}, nil
}

// checkImage asks Config.ImageExists whether image can be assigned.
func (f *Fleet) checkImage(image string) error {
	if f.imageExists == nil {
		return nil
	}
	if err := f.imageExists(image); err != nil {
		return fmt.Errorf("%w: image %s: %w", ErrInvalid, image, err)
	}
	return nil
}

// copyGeneration returns g as generation n.
func copyGeneration(g Generation, n int, op string, now time.Time) Generation {
	g.N, g.Op, g.Created = n, op, now
	g.Identity.Generation = n
	return g
}

// checkHostname fails with ErrExists when a machine other than mac that
// is not retired (nor discovered) has the hostname.
func checkHostname(tx store.Tx, mac, hostname string) error {
	return tx.ForEach(bucket, func(key string, v []byte) error {
		if key == mac {
			return nil
		}
		other, err := decode(key, v)
		if err != nil {
			return err
		}
		if other.State != Retired && other.State != Discovered && strings.EqualFold(other.Hostname, hostname) {
			return fmt.Errorf("%w: hostname %s is used by %s", ErrExists, hostname, other.MAC)
		}
		return nil
	})
}

func (m *Machine) audit(t time.Time, actor, op string, from, to int, detail string) {
	m.Audit = append(m.Audit, AuditEntry{Time: t, Actor: actorName(actor), Op: op, From: from, To: to, Detail: detail})
	if n := len(m.Audit) - maxAudit; n > 0 {
		m.Audit = append([]AuditEntry(nil), m.Audit[n:]...)
	}
}

func (m Machine) mode() Mode {
	if m.Mode == "" {
		return Stateless
	}
	return m.Mode
}

func checkMode(mode Mode) (Mode, error) {
	switch mode {
	case "", Stateless, Install:
		return mode, nil
	}
	return "", fmt.Errorf("%w: mode %q is not %q or %q", ErrInvalid, mode, Stateless, Install)
}

// newMachineID returns 32 random hex digits.
func newMachineID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
