package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/identity"
)

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
)

// reach brings the machine mac into state s, at generation 2 (image
// sha256:a, then sha256:b), except discovered (no generation). Installing
// and installed machines are in install mode, the others stateless.
func reach(h *harness, mac string, s State) {
	h.t.Helper()
	if s == Discovered {
		if _, created, err := h.f.Discover(mac); err != nil || !created {
			h.t.Fatalf("Discover = %v, %v", created, err)
		}
		return
	}
	mode := Stateless
	if s == Installing || s == Installed {
		mode = Install
	}
	h.must(h.f.Create(NewMachine{MAC: mac, Hostname: "h" + strings.ReplaceAll(mac, ":", ""), Image: "sha256:a", Mode: mode}, "setup"))
	h.must(h.f.Replace(mac, NewMachine{Image: "sha256:b"}, "setup"))
	switch s {
	case Booting, Installing:
		h.boot(mac, BootNetwork)
	case Installed:
		h.boot(mac, BootNetwork)
		h.must(h.f.ReportInstall(mac, true, ""))
	case Ready:
		h.boot(mac, BootNetwork)
		h.must(h.f.Report(mac, "sha256:b"))
	case Failed:
		h.boot(mac, BootNetwork)
		h.must(h.f.Report(mac, "sha256:zzz"))
	case Retired:
		h.must(h.f.Retire(mac, "setup"))
	}
	if m := h.get(mac); m.State != s {
		h.t.Fatalf("reach(%s) got to %s", s, m.State)
	}
}

// outcome is what an operation should do in a state: fail with err and
// write nothing, or lead to state at generation gen with pending set so.
type outcome struct {
	err     error
	state   State
	gen     int
	pending bool
}

// TestLifecycleTable runs every operation in every state on a real store:
// allowed ones lead to the right state, generation and pending flag;
// refused ones return their error and leave the stored bytes as they were.
func TestLifecycleTable(t *testing.T) {
	fail := func(err error) outcome { return outcome{err: err} }
	ok := func(s State, gen int, pending bool) outcome { return outcome{state: s, gen: gen, pending: pending} }
	// Every bootable state, as reached, at generation 2.
	same := func(f func(s State) outcome) map[State]outcome {
		out := map[State]outcome{}
		for _, s := range States() {
			out[s] = f(s)
		}
		return out
	}
	newGen := same(func(s State) outcome {
		if s == Discovered || s == Retired {
			return fail(ErrTransition)
		}
		return ok(s, 3, true)
	})
	onlyFrom := func(from State, to outcome) map[State]outcome {
		return same(func(s State) outcome {
			if s == from {
				return to
			}
			return fail(ErrTransition)
		})
	}
	ops := []struct {
		name string
		do   func(h *harness) error
		want map[State]outcome
	}{
		{"create", func(h *harness) error {
			_, err := h.f.Create(NewMachine{MAC: macA, Hostname: "fresh", Image: "sha256:c"}, "op")
			return err
		}, same(func(s State) outcome {
			if s == Discovered {
				return ok(Assigned, 1, true)
			}
			return fail(ErrExists)
		})},
		{"replace", func(h *harness) error {
			_, err := h.f.Replace(macA, NewMachine{Image: "sha256:c"}, "op")
			return err
		}, newGen},
		{"reimage", func(h *harness) error { _, err := h.f.Reimage(macA, "op"); return err }, newGen},
		{"rollback", func(h *harness) error { _, err := h.f.Rollback(macA, "op"); return err }, newGen},
		{"retire", func(h *harness) error { _, err := h.f.Retire(macA, "op"); return err }, same(func(s State) outcome {
			switch s {
			case Retired:
				return fail(ErrTransition)
			case Discovered:
				return ok(Retired, 0, false)
			case Installed, Installing:
				return ok(Retired, 2, true)
			case Ready:
				return ok(Retired, 2, false)
			}
			return ok(Retired, 2, true)
		})},
		{"startboot", func(h *harness) error {
			p, err := h.f.StartBoot(macA, BootNetwork)
			if err == nil && (p.Kind == BootNothing) != (p.Machine.State == Discovered || p.Machine.State == Retired) {
				return fmt.Errorf("plan %s in state %s", p.Kind, p.Machine.State)
			}
			return err
		}, same(func(s State) outcome {
			switch s {
			case Discovered, Retired: // boots nothing, writes nothing
				return fail(nil)
			case Installing:
				return ok(Installing, 2, true)
			case Installed:
				return ok(Booting, 2, true) // the disk; ready is still to come
			case Ready:
				return ok(Booting, 2, false)
			}
			return ok(Booting, 2, true)
		})},
		{"report", func(h *harness) error { _, err := h.f.Report(macA, "sha256:b"); return err },
			onlyFrom(Booting, ok(Ready, 2, false))},
		{"install ok", func(h *harness) error { _, err := h.f.ReportInstall(macA, true, ""); return err },
			onlyFrom(Installing, ok(Installed, 2, true))},
		{"install failed", func(h *harness) error { _, err := h.f.ReportInstall(macA, false, "disk too small"); return err },
			onlyFrom(Installing, ok(Failed, 2, true))},
		{"discover", func(h *harness) error {
			_, created, err := h.f.Discover(macA)
			if created {
				return errors.New("created a record for a known MAC")
			}
			return err
		}, same(func(State) outcome { return fail(nil) })},
		{"observe script", func(h *harness) error { _, err := h.f.Observe(macA, EventScript, ""); return err },
			same(func(s State) outcome {
				switch s {
				case Discovered, Retired:
					return fail(ErrTransition)
				case Ready:
					return ok(Booting, 2, false)
				case Installing, Installed:
					return ok(Booting, 2, true)
				}
				return ok(Booting, 2, true)
			})},
		{"observe ready", func(h *harness) error { _, err := h.f.Observe(macA, EventReady, "sha256:b"); return err },
			same(func(State) outcome { return fail(ErrTransition) })},
		{"observe retired", func(h *harness) error { _, err := h.f.Observe(macA, EventRetired, ""); return err },
			same(func(State) outcome { return fail(ErrTransition) })},
	}
	for _, s := range States() {
		for _, op := range ops {
			t.Run(fmt.Sprintf("%s/%s", s, op.name), func(t *testing.T) {
				h := newHarness(t)
				reach(h, macA, s)
				want := op.want[s]
				before := h.snapshot()
				err := op.do(h)
				if want.state == "" { // refused, or nothing to do
					if !errors.Is(err, want.err) || (want.err == nil) != (err == nil) {
						t.Fatalf("%s in state %s = %v, want %v", op.name, s, err, want.err)
					}
					h.unchanged(before, op.name)
					return
				}
				if err != nil {
					t.Fatalf("%s in state %s = %v, want state %s", op.name, s, err, want.state)
				}
				m := h.get(macA)
				got := outcome{state: m.State, gen: m.Generation, pending: m.ReimagePending}
				if diff := cmp.Diff(want, got, cmp.AllowUnexported(outcome{}), cmp.Comparer(func(a, b error) bool { return a == b })); diff != "" {
					t.Errorf("%s in state %s (-want +got):\n%s", op.name, s, diff)
				}
				if m.Generation != 0 && (len(m.Generations) == 0 || m.Generations[len(m.Generations)-1].N != m.Generation) {
					t.Errorf("generation %d is not the last of %+v", m.Generation, m.Generations)
				}
				if len(m.Events) == 0 || len(h.snapshot()[macA]) == len(before[macA]) {
					t.Errorf("%s recorded no event", op.name)
				}
			})
		}
	}
}

// TestGenerations replaces a running machine: the new generation is
// pending, the running one stays visible until the new one reports ready.
func TestGenerations(t *testing.T) {
	h := newHarness(t)
	id := &identity.Identity{Domain: "lab.example", Labels: map[string]string{"rack": "r1"}}
	m := h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a", Identity: id}, "alice"))
	if m.Generation != 1 || !m.ReimagePending || m.Running != 0 || len(m.MachineID) != 32 {
		t.Fatalf("Create = gen %d pending %v running %d machine id %q", m.Generation, m.ReimagePending, m.Running, m.MachineID)
	}
	wantID := identity.Identity{Hostname: "n1", Domain: "lab.example", MAC: macA, Labels: map[string]string{"rack": "r1"},
		MachineID: m.MachineID, Generation: 1, Image: "sha256:a"}
	if diff := cmp.Diff(wantID, m.Generations[0].Identity); diff != "" {
		t.Errorf("generation 1 identity (-want +got):\n%s", diff)
	}
	h.boot(macA, BootNetwork)
	m = h.must(h.f.Report(macA, "sha256:a"))
	if m.State != Ready || m.Running != 1 || m.RunningImage != "sha256:a" || m.ReimagePending {
		t.Fatalf("after ready: %s running %d %s pending %v", m.State, m.Running, m.RunningImage, m.ReimagePending)
	}

	m = h.must(h.f.Replace(macA, NewMachine{MAC: "52-54-00-00-00-0A", Image: "sha256:b", Hostname: "n1-new"}, "bob"))
	if m.State != Ready || m.Generation != 2 || !m.ReimagePending || m.Running != 1 || m.RunningImage != "sha256:a" ||
		m.Image != "sha256:b" || m.Hostname != "n1-new" {
		t.Fatalf("after replace: %s gen %d pending %v running %d %s image %s hostname %s",
			m.State, m.Generation, m.ReimagePending, m.Running, m.RunningImage, m.Image, m.Hostname)
	}
	// A nil Identity keeps the optional fields; the machine ID stays.
	if g := m.Generations[1]; g.Identity.Domain != "lab.example" || g.Identity.MachineID != m.MachineID || g.Identity.Generation != 2 || g.Op != "replace" {
		t.Errorf("generation 2 = %+v", g)
	}
	if got := m.Identity(); got.Hostname != "n1-new" || got.Image != "sha256:b" || got.Generation != 2 {
		t.Errorf("Identity() = %+v, want generation 2's", got)
	}
	pinned, err := h.f.PinnedImages()
	if err != nil || !pinned["sha256:a"] || !pinned["sha256:b"] {
		t.Errorf("PinnedImages() = %v, %v, want a (running, previous) and b (current)", pinned, err)
	}
	p := h.boot(macA, BootNetwork)
	if p.Generation.N != 2 || p.Generation.Image != "sha256:b" || p.Kind != BootNetwork || p.Token == "" {
		t.Errorf("StartBoot = %+v", p)
	}
	m = h.must(h.f.Report(macA, "sha256:b"))
	if m.State != Ready || m.Running != 2 || m.RunningImage != "sha256:b" || m.ReimagePending {
		t.Fatalf("after ready on 2: %s running %d %s pending %v", m.State, m.Running, m.RunningImage, m.ReimagePending)
	}

	// A replace during a boot: the boot ends on its own generation,
	// which is then running, and the new one stays pending.
	h.boot(macA, BootNetwork)
	h.must(h.f.Replace(macA, NewMachine{Image: "sha256:c"}, "bob"))
	m = h.must(h.f.Report(macA, "sha256:b"))
	if m.State != Ready || m.Running != 2 || m.Generation != 3 || !m.ReimagePending {
		t.Errorf("ready of generation 2 while 3 is current: %s running %d gen %d pending %v", m.State, m.Running, m.Generation, m.ReimagePending)
	}

	// Identity's hostname and image stand in for empty fields.
	m = h.must(h.f.Replace(macA, NewMachine{Identity: &identity.Identity{Hostname: "n1-id", Image: "sha256:d", Domain: "x.example"}}, ""))
	if m.Hostname != "n1-id" || m.Image != "sha256:d" || m.Identity().FQDN() != "n1-id.x.example" {
		t.Errorf("Replace with the identity's hostname and image: %s %s %s", m.Hostname, m.Image, m.Identity().FQDN())
	}

	// At most maxGenerations are kept, the newest.
	for range 12 {
		h.must(h.f.Reimage(macA, ""))
	}
	m = h.get(macA)
	if len(m.Generations) != maxGenerations || m.Generations[0].N != m.Generation-maxGenerations+1 {
		t.Errorf("kept generations %d..%d (%d), want the last %d of %d",
			m.Generations[0].N, m.Generations[len(m.Generations)-1].N, len(m.Generations), maxGenerations, m.Generation)
	}
}

// TestRollback checks that a rollback is a new generation equal to N-1,
// and its refusals.
func TestRollback(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a",
		Identity: &identity.Identity{Labels: map[string]string{"v": "1"}, DNS: []string{"10.0.0.1"}}}, "alice"))
	before := h.snapshot()
	if _, err := h.f.Rollback(macA, "alice"); !errors.Is(err, ErrTransition) {
		t.Fatalf("Rollback at generation 1 = %v, want ErrTransition", err)
	}
	h.unchanged(before, "refused rollback at generation 1")

	h.must(h.f.Replace(macA, NewMachine{Hostname: "n1b", Image: "sha256:b", Identity: &identity.Identity{Labels: map[string]string{"v": "2"}}}, "alice"))
	m := h.must(h.f.Rollback(macA, "carol"))
	g1, g3 := m.Generations[0], m.Generations[2]
	if m.Generation != 3 || g3.Op != "rollback" || g3.Image != g1.Image || m.Image != "sha256:a" || m.Hostname != "n1" || !m.ReimagePending {
		t.Fatalf("after rollback: gen %d %+v", m.Generation, g3)
	}
	want := g1.Identity
	want.Generation = 3
	if diff := cmp.Diff(want, g3.Identity); diff != "" {
		t.Errorf("generation 3 identity is not generation 1's (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(AuditEntry{Time: h.clock(), Actor: "carol", Op: "rollback", From: 2, To: 3, Detail: "to generation 1"},
		m.Audit[len(m.Audit)-1]); diff != "" {
		t.Errorf("audit entry (-want +got):\n%s", diff)
	}

	// Generation 2's image is gone from the image store: no rollback to it.
	h.dropImage("sha256:b")
	before = h.snapshot()
	if _, err := h.f.Rollback(macA, "carol"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "sha256:b") {
		t.Fatalf("Rollback to a vanished image = %v, want ErrInvalid naming it", err)
	}
	h.unchanged(before, "refused rollback to a vanished image")

	// The hostname generation 1 had is taken since: refused too.
	h2 := newHarness(t)
	h2.must(h2.f.Create(NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a"}, ""))
	h2.must(h2.f.Replace(macA, NewMachine{Hostname: "n2", Image: "sha256:b"}, ""))
	h2.must(h2.f.Create(NewMachine{MAC: macB, Hostname: "n1", Image: "sha256:a"}, ""))
	before = h2.snapshot()
	if _, err := h2.f.Rollback(macA, ""); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), macB) {
		t.Fatalf("Rollback to a hostname now used = %v, want ErrExists naming %s", err, macB)
	}
	h2.unchanged(before, "refused rollback to a taken hostname")
}

// TestAudit checks who did what, from which generation to which.
func TestAudit(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a"}, "alice"))
	h.must(h.f.Replace(macA, NewMachine{Image: "sha256:b"}, "bob"))
	h.must(h.f.Reimage(macA, ""))
	h.must(h.f.Rollback(macA, "carol"))
	m := h.must(h.f.Retire(macA, "dave"))
	type entry struct {
		Actor, Op, Detail string
		From, To          int
	}
	var got []entry
	for _, a := range m.Audit {
		if a.Time.IsZero() {
			t.Errorf("audit entry %+v has no time", a)
		}
		got = append(got, entry{a.Actor, a.Op, a.Detail, a.From, a.To})
	}
	want := []entry{
		{"alice", "create", "image sha256:a", 0, 1},
		{"bob", "replace", "image sha256:b", 1, 2},
		{"unknown", "reimage", "image sha256:b", 2, 3},
		{"carol", "rollback", "to generation 2", 3, 4},
		{"dave", "retire", "", 4, 4},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if !m.LastSeen.IsZero() {
		t.Errorf("operator operations set LastSeen %v: the machine did nothing", m.LastSeen)
	}
	var kinds []string
	for _, e := range m.Events {
		kinds = append(kinds, string(e.Kind)+" "+e.Detail)
	}
	wantKinds := []string{
		"assigned sha256:a", "generation replace generation 2: image sha256:b", "generation reimage generation 3: image sha256:b",
		"generation rollback generation 4: image sha256:b", "retired ",
	}
	if diff := cmp.Diff(wantKinds, kinds); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestCreateRejects checks bad input: a clear error and nothing written.
func TestCreateRejects(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a"}, ""))
	h.must(h.f.Create(NewMachine{MAC: "52:54:00:00:00:0c", Hostname: "gone", Image: "sha256:a"}, ""))
	h.must(h.f.Retire("52:54:00:00:00:0c", ""))
	withID := func(id identity.Identity) NewMachine {
		return NewMachine{MAC: macB, Hostname: "n2", Image: "sha256:a", Identity: &id}
	}
	for _, tc := range []struct {
		name string
		nm   NewMachine
		want error
		msg  string // substring of the error
	}{
		{"dup mac", NewMachine{MAC: macA, Hostname: "n2", Image: "sha256:a"}, ErrExists, "mac " + macA + " is already registered (hostname n1"},
		{"dup mac of a retired machine", NewMachine{MAC: "52:54:00:00:00:0c", Hostname: "n2", Image: "sha256:a"}, ErrExists, "state retired"},
		{"dup hostname", NewMachine{MAC: macB, Hostname: "N1", Image: "sha256:a"}, ErrExists, "hostname N1 is used by " + macA},
		{"bad mac", NewMachine{MAC: "52:54:00", Hostname: "n2", Image: "sha256:a"}, ErrInvalid, "not an Ethernet MAC"},
		{"bad hostname", NewMachine{MAC: macB, Hostname: "n_2", Image: "sha256:a"}, ErrInvalid, `'_'`},
		{"no image", NewMachine{MAC: macB, Hostname: "n2"}, ErrInvalid, "image is empty"},
		{"missing image", NewMachine{MAC: macB, Hostname: "n2", Image: "sha256:nope"}, ErrInvalid, "not in the image store"},
		{"bad mode", NewMachine{MAC: macB, Hostname: "n2", Image: "sha256:a", Mode: "diskless"}, ErrInvalid, `mode "diskless"`},
		{"bad address", withID(identity.Identity{Addresses: []string{"10.0.0.300/24"}}), ErrInvalid, "addresses[0]"},
		{"gateway without address", withID(identity.Identity{Gateway: "10.0.0.1"}), ErrInvalid, "needs static addresses"},
		{"bad dns", withID(identity.Identity{DNS: []string{"dns.example"}}), ErrInvalid, "dns[0]"},
		{"bad ssh key", withID(identity.Identity{SSHAuthorizedKeys: []string{"not a key"}}), ErrInvalid, "ssh_authorized_keys[0]"},
		{"identity hostname differs", withID(identity.Identity{Hostname: "other"}), ErrInvalid, `identity hostname "other"`},
		{"identity mac differs", withID(identity.Identity{MAC: macA}), ErrInvalid, "identity mac"},
		{"identity machine id", withID(identity.Identity{MachineID: "abc"}), ErrInvalid, "kiln's to set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.snapshot()
			_, err := h.f.Create(tc.nm, "alice")
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Create(%+v) = %v, want %v with %q", tc.nm, err, tc.want, tc.msg)
			}
			h.unchanged(before, "refused Create")
		})
	}
	// A retired machine's hostname is free again.
	h.must(h.f.Create(NewMachine{MAC: macB, Hostname: "gone", Image: "sha256:a"}, ""))

	// Replace validates the same way.
	before := h.snapshot()
	for _, tc := range []struct {
		name string
		nm   NewMachine
		want error
	}{
		{"dup hostname", NewMachine{Hostname: "gone"}, ErrExists},
		{"other mac", NewMachine{MAC: macB}, ErrInvalid},
		{"bad identity", NewMachine{Identity: &identity.Identity{Gateway: "x"}}, ErrInvalid},
		{"missing image", NewMachine{Image: "sha256:nope"}, ErrInvalid},
	} {
		if _, err := h.f.Replace(macA, tc.nm, ""); !errors.Is(err, tc.want) {
			t.Errorf("Replace %s = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := h.f.Replace("52:54:00:00:00:99", NewMachine{Image: "sha256:b"}, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Replace(unknown) = %v, want ErrNotFound", err)
	}
	h.unchanged(before, "refused Replace")
}

// TestNewMachineJSON checks the strict decoding of a NewMachine: identity
// fields that belong in the image are refused with a clear error.
func TestNewMachineJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     NewMachine
		err      string
	}{
		{"full", `{"mac":"52:54:00:00:00:0a","hostname":"n1","image":"sha256:a","mode":"install","identity":{"domain":"lab","labels":{"a":"b"}}}`,
			NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a", Mode: Install, Identity: &identity.Identity{Domain: "lab", Labels: map[string]string{"a": "b"}}}, ""},
		{"minimal", `{"mac":"52:54:00:00:00:0a","hostname":"n1","image":"sha256:a"}`, NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a"}, ""},
		{"packages", `{"mac":"x","identity":{"packages":["vim"]}}`, NewMachine{}, `"packages" is not identity: put it in the image`},
		{"runcmd", `{"identity":{"domain":"d","runcmd":["rm -rf /"]}}`, NewMachine{}, `"runcmd" is not identity`},
		{"unknown top", `{"mac":"x","users":[]}`, NewMachine{}, `json: unknown field "users"`},
		{"case", `{"MAC":"x"}`, NewMachine{}, `json: unknown field "MAC"`},
		{"not an object", `[1]`, NewMachine{}, "cannot unmarshal array"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nm NewMachine
			err := json.Unmarshal([]byte(tc.in), &nm)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Unmarshal(%s) = %v, want %q", tc.in, err, tc.err)
				}
				var nie *identity.NotIdentityError
				if strings.Contains(tc.err, "not identity") && (!errors.As(err, &nie) || !errors.Is(err, ErrInvalid)) {
					t.Errorf("Unmarshal(%s) = %v, want an ErrInvalid *identity.NotIdentityError", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, nm); diff != "" {
				t.Errorf("Unmarshal(%s) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestDiscover checks discovered records: created once, free for a known
// MAC, boot nothing, capped.
func TestDiscover(t *testing.T) {
	h := newHarness(t)
	m, created, err := h.f.Discover("52-54-00-00-00-0A")
	if err != nil || !created || m.State != Discovered || m.Generation != 0 || m.ReimagePending || m.MAC != macA {
		t.Fatalf("Discover = %+v, %v, %v", m, created, err)
	}
	before := h.snapshot()
	if _, created, err := h.f.Discover(macA); err != nil || created {
		t.Fatalf("second Discover = %v, %v, want not created", created, err)
	}
	p := h.boot(macA, BootNetwork)
	if p.Kind != BootNothing || p.Token != "" {
		t.Fatalf("StartBoot(discovered) = %+v, want nothing", p)
	}
	if _, err := h.f.CheckToken(macA, ""); !errors.Is(err, ErrForbidden) {
		t.Errorf("CheckToken(discovered) = %v, want ErrForbidden", err)
	}
	if m, err := h.f.ObserveAll(macA, Observation{Kind: EventOffered}, Observation{Kind: EventAcked, Detail: "10.0.0.9"}); err != nil || m.State != Discovered {
		t.Errorf("ObserveAll(discovered) = %v, %v", m.State, err)
	}
	h.unchanged(before, "Discover of a known MAC, StartBoot and ObserveAll of a discovered one")
	if c, _ := h.f.CountByState(); c["discovered"] != 1 {
		t.Errorf("CountByState() = %v", c)
	}

	// Creating it keeps its history.
	h.advance(1)
	m = h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "n1", Image: "sha256:a"}, ""))
	if m.State != Assigned || m.Generation != 1 || m.Events[0].Kind != EventDiscovered || !m.Created.Equal(m.Events[0].Time) {
		t.Fatalf("Create(discovered) = %+v, want assigned with its discovery kept", m)
	}
}

// TestDiscoverCap checks that a flood of MACs stops at MaxDiscovered
// records and that a known MAC costs no write transaction.
func TestDiscoverCap(t *testing.T) {
	f, cs := newCountingFleet(t)
	f.maxDiscovered = 3
	for i := range 3 {
		if _, created, err := f.Discover(fmt.Sprintf("52:54:00:00:01:%02x", i)); err != nil || !created {
			t.Fatalf("Discover %d = %v, %v", i, created, err)
		}
	}
	before := cs.updates.Load()
	for i := range 100 {
		if _, created, err := f.Discover(fmt.Sprintf("52:54:00:00:02:%02x", i)); err == nil || created || !strings.Contains(err.Error(), "3 discovered machines") {
			t.Fatalf("Discover beyond the cap = %v, %v, want an error", created, err)
		}
		if _, created, err := f.Discover("52:54:00:00:01:01"); err != nil || created {
			t.Fatalf("Discover(known) = %v, %v", created, err)
		}
	}
	if n := cs.updates.Load() - before; n != 0 {
		t.Errorf("Discover beyond the cap and of known MACs ran %d write transactions, want 0", n)
	}
	if c, _ := f.CountByState(); c["discovered"] != 3 {
		t.Errorf("CountByState() = %v, want 3 discovered", c)
	}
	// Registered machines do not count against the cap.
	if _, err := f.Create(NewMachine{MAC: "52:54:00:00:01:00", Hostname: "n0", Image: "sha256:a"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, created, err := f.Discover("52:54:00:00:02:00"); err != nil || !created {
		t.Fatalf("Discover after a discovered machine was created = %v, %v", created, err)
	}
}

// TestIdentityIPv4Only: a DHCPv6 lease sets the record's IP, but the
// identity's ip is the IPv4 lease only, so it stays valid.
func TestIdentityIPv4Only(t *testing.T) {
	for ip, want := range map[string]string{"10.77.0.5": "10.77.0.5", "fd77::1eb0": "", "": "", "nonsense": ""} {
		m := Machine{MAC: "52:54:00:00:00:01", Hostname: "h", Image: "sha256:" + strings.Repeat("a", 64), MachineID: strings.Repeat("b", 32), IP: ip}
		id := m.Identity()
		if id.IP != want {
			t.Errorf("IP %q: identity ip %q, want %q", ip, id.IP, want)
		}
		if err := id.Validate(); err != nil {
			t.Errorf("IP %q: identity invalid: %v", ip, err)
		}
	}
}
