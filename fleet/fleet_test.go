package fleet

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/store"
)

func newTestFleet(t *testing.T) *Fleet {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kiln.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f, err := New(Config{Store: st, Now: func() time.Time { clock = clock.Add(time.Second); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAddGetListDelete(t *testing.T) {
	f := newTestFleet(t)
	m, err := f.Add(NewMachine{MAC: "52-54-00-AA-BB-01", Hostname: "n1", Image: "sha256:img"})
	if err != nil {
		t.Fatal(err)
	}
	if m.MAC != "52:54:00:aa:bb:01" || m.State != Assigned {
		t.Fatalf("Add = %+v, want normalized MAC and state assigned", m)
	}
	got, err := f.Get("52:54:00:aa:bb:01")
	if err != nil || got.Hostname != "n1" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	list, err := f.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := f.Delete("52:54:00:aa:bb:01"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Get("52:54:00:aa:bb:01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := f.Delete("52:54:00:aa:bb:01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
}

func TestAddRejects(t *testing.T) {
	f := newTestFleet(t)
	if _, err := f.Add(NewMachine{MAC: "52:54:00:00:00:01", Hostname: "n1", Image: "sha256:a"}); err != nil {
		t.Fatal(err)
	}
	f.imageExists = func(id string) error {
		if id == "sha256:missing" {
			return errors.New("not in store")
		}
		return nil
	}
	for _, tc := range []struct {
		name string
		nm   NewMachine
		want error
	}{
		{"dup mac", NewMachine{MAC: "52:54:00:00:00:01", Hostname: "n2", Image: "sha256:a"}, ErrExists},
		{"dup hostname", NewMachine{MAC: "52:54:00:00:00:02", Hostname: "n1", Image: "sha256:a"}, ErrExists},
		{"dup hostname other case", NewMachine{MAC: "52:54:00:00:00:06", Hostname: "N1", Image: "sha256:a"}, ErrExists},
		{"bad mac", NewMachine{MAC: "nope", Hostname: "n3", Image: "sha256:a"}, ErrInvalid},
		{"bad hostname", NewMachine{MAC: "52:54:00:00:00:03", Hostname: "n_3", Image: "sha256:a"}, ErrInvalid},
		{"no image", NewMachine{MAC: "52:54:00:00:00:04", Hostname: "n4"}, ErrInvalid},
		{"missing image", NewMachine{MAC: "52:54:00:00:00:05", Hostname: "n5", Image: "sha256:missing"}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.Add(tc.nm); !errors.Is(err, tc.want) {
				t.Fatalf("Add(%+v) = %v, want %v", tc.nm, err, tc.want)
			}
		})
	}
	list, _ := f.List()
	if len(list) != 1 {
		t.Fatalf("rejected adds wrote records: have %d machines, want 1", len(list))
	}
}

func TestBootToReady(t *testing.T) {
	f := newTestFleet(t)
	mac := "52:54:00:00:00:01"
	if _, err := f.Add(NewMachine{MAC: mac, Hostname: "n1", Image: "sha256:a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Report(mac, "sha256:a"); !errors.Is(err, ErrTransition) {
		t.Fatalf("Report before boot = %v, want ErrTransition", err)
	}
	steps := []struct {
		kind   EventKind
		detail string
		want   State
	}{
		{EventOffered, "", Assigned},
		{EventAcked, "10.0.0.9", Assigned},
		{EventScript, "", Booting},
		{EventKernel, "", Booting},
		{EventInitrd, "", Booting},
		{EventIdentity, "", Booting},
	}
	for _, s := range steps {
		m, err := f.Observe(mac, s.kind, s.detail)
		if err != nil || m.State != s.want {
			t.Fatalf("Observe(%s) = %s, %v, want %s", s.kind, m.State, err, s.want)
		}
	}
	m, err := f.Report(mac, "sha256:a")
	if err != nil || m.State != Ready || m.ReportedImage != "sha256:a" || m.IP != "10.0.0.9" {
		t.Fatalf("Report = %+v, %v", m, err)
	}
	if n := len(m.Events); n != len(steps)+2 {
		t.Fatalf("have %d events, want %d", n, len(steps)+2)
	}
	if m.LastSeen.IsZero() {
		t.Fatal("LastSeen not set")
	}
	m2, err := f.Get(mac)
	if err != nil || m2.State != Ready {
		t.Fatalf("Get after ready = %+v, %v", m2, err)
	}
}

func TestReportWrongImageFails(t *testing.T) {
	f := newTestFleet(t)
	mac := "52:54:00:00:00:01"
	f.Add(NewMachine{MAC: mac, Hostname: "n1", Image: "sha256:a"})
	f.Observe(mac, EventScript, "")
	m, err := f.Report(mac, "sha256:b")
	if err != nil || m.State != Failed || m.Reason == "" {
		t.Fatalf("Report(wrong image) = %+v, %v, want failed with reason", m, err)
	}
	// A reboot starts afresh.
	m, err = f.Observe(mac, EventScript, "")
	if err != nil || m.State != Booting || m.Reason != "" {
		t.Fatalf("Observe(script) after failure = %+v, %v", m, err)
	}
}

func TestTransitionTable(t *testing.T) {
	for _, from := range []State{Assigned, Booting, Ready, Failed} {
		for _, kind := range []EventKind{EventOffered, EventAcked, EventScript, EventKernel, EventInitrd, EventIdentity, EventReady, EventFailed, "bogus"} {
			t.Run(fmt.Sprintf("%s+%s", from, kind), func(t *testing.T) {
				to, err := transition(from, kind)
				switch {
				case kind == "bogus":
					if err == nil {
						t.Fatal("unknown event accepted")
					}
				case kind == EventScript:
					if err != nil || to != Booting {
						t.Fatalf("= %s, %v, want booting", to, err)
					}
				case kind == EventReady || kind == EventFailed:
					if from != Booting {
						if !errors.Is(err, ErrTransition) {
							t.Fatalf("= %s, %v, want ErrTransition", to, err)
						}
						return
					}
					want := map[EventKind]State{EventReady: Ready, EventFailed: Failed}[kind]
					if err != nil || to != want {
						t.Fatalf("= %s, %v, want %s", to, err, want)
					}
				default:
					if err != nil || to != from {
						t.Fatalf("= %s, %v, want unchanged %s", to, err, from)
					}
				}
			})
		}
	}
}

func TestEventsBounded(t *testing.T) {
	f := newTestFleet(t)
	mac := "52:54:00:00:00:01"
	f.Add(NewMachine{MAC: mac, Hostname: "n1", Image: "sha256:a"})
	var m Machine
	for range maxEvents + 20 {
		m, _ = f.Observe(mac, EventOffered, "")
	}
	if len(m.Events) != maxEvents {
		t.Fatalf("have %d events, want the cap %d", len(m.Events), maxEvents)
	}
}
