package fleet

import (
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/store"
)

// countingStore is a real store that counts its write transactions.
type countingStore struct {
	store.Store
	updates atomic.Int64
}

func (s *countingStore) Update(fn func(store.Tx) error) error {
	s.updates.Add(1)
	return s.Store.Update(fn)
}

func newCountingFleet(t testing.TB) (*Fleet, *countingStore) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	f, err := New(Config{Store: cs})
	if err != nil {
		t.Fatal(err)
	}
	return f, cs
}

// TestObserveUnknownNoWrite checks that events of machines kiln does not
// know (most DHCP clients on a busy segment) cost no write transaction.
func TestObserveUnknownNoWrite(t *testing.T) {
	f, cs := newCountingFleet(t)
	if _, err := f.Add(NewMachine{MAC: "52:54:00:00:00:01", Hostname: "n1", Image: "sha256:a"}); err != nil {
		t.Fatal(err)
	}
	before := cs.updates.Load()
	for range 100 {
		if _, err := f.Observe("52:54:00:00:00:99", EventOffered, "10.0.0.9"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Observe(unknown) = %v, want ErrNotFound", err)
		}
	}
	if _, err := f.ObserveAll("52:54:00:00:00:99", Observation{Kind: EventFirstHop}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ObserveAll(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := f.Report("52:54:00:00:00:99", "sha256:a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Report(unknown) = %v, want ErrNotFound", err)
	}
	if n := cs.updates.Load() - before; n != 0 {
		t.Errorf("events of an unknown MAC ran %d write transactions, want 0", n)
	}
	// A known machine still gets one write per event.
	if _, err := f.Observe("52:54:00:00:00:01", EventOffered, "10.0.0.9"); err != nil {
		t.Fatal(err)
	}
	if n := cs.updates.Load() - before; n != 1 {
		t.Errorf("an event of a known MAC ran %d write transactions, want 1", n)
	}
}

// TestObserveAll checks that several events are recorded in one write, in
// order, and that a refused one records none of them.
func TestObserveAll(t *testing.T) {
	f, cs := newCountingFleet(t)
	mac := "52:54:00:00:00:01"
	if _, err := f.Add(NewMachine{MAC: mac, Hostname: "n1", Image: "sha256:a"}); err != nil {
		t.Fatal(err)
	}
	before := cs.updates.Load()
	m, err := f.ObserveAll(mac,
		Observation{EventFirstHop, "httpboot uki"}, Observation{EventScript, "httpboot uki"},
		Observation{EventKernel, "uki"}, Observation{EventInitrd, "uki"})
	if err != nil {
		t.Fatal(err)
	}
	if n := cs.updates.Load() - before; n != 1 {
		t.Errorf("ObserveAll of 4 events ran %d write transactions, want 1", n)
	}
	var kinds []EventKind
	for _, e := range m.Events {
		kinds = append(kinds, e.Kind)
	}
	if diff := cmp.Diff([]EventKind{EventAssigned, EventFirstHop, EventScript, EventKernel, EventInitrd}, kinds); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if m.State != Booting {
		t.Errorf("state after ObserveAll = %s, want booting", m.State)
	}

	// ready is not allowed before a boot: nothing of the batch is kept.
	mac2 := "52:54:00:00:00:02"
	if _, err := f.Add(NewMachine{MAC: mac2, Hostname: "n2", Image: "sha256:a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ObserveAll(mac2, Observation{Kind: EventKernel}, Observation{Kind: EventReady}); !errors.Is(err, ErrTransition) {
		t.Fatalf("ObserveAll(kernel, ready) in state assigned = %v, want ErrTransition", err)
	}
	if m2, _ := f.Get(mac2); len(m2.Events) != 1 {
		t.Errorf("a refused ObserveAll left events %v, want only assigned", m2.Events)
	}
}

// TestTimelineFromStore boots a machine through the fleet and reads its
// timeline back from the store.
func TestTimelineFromStore(t *testing.T) {
	f := newTestFleet(t) // the clock ticks one second per call
	mac := "52:54:00:00:00:01"
	f.Add(NewMachine{MAC: mac, Hostname: "n1", Image: "sha256:a"})
	for _, o := range []Observation{
		{EventOffered, "10.0.0.9"}, {EventAcked, "10.0.0.9"}, {EventFirstHop, "tftp undionly.kpxe"},
		{EventScript, "sha256:a"}, {EventKernel, ""}, {EventInitrd, ""}, {EventIdentity, ""},
	} {
		if _, err := f.Observe(mac, o.Kind, o.Detail); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Report(mac, "sha256:a"); err != nil {
		t.Fatal(err)
	}
	m, err := f.Get(mac)
	if err != nil {
		t.Fatal(err)
	}
	tl := m.Timeline()
	if tl.Outcome != BootReady || len(tl.Steps) != 8 || tl.Steps[2].Kind != EventFirstHop || tl.Steps[2].Detail != "tftp undionly.kpxe" {
		t.Fatalf("Timeline() = %+v, want 8 steps to ready with the first hop third", tl)
	}
	// Observe and modify each read the clock: two seconds per event.
	if tl.DurationMS != 14000 || tl.Steps[7].OffsetMS != 14000 {
		t.Errorf("Timeline() duration %v, ready at %v ms, want 14000", tl.DurationMS, tl.Steps[7].OffsetMS)
	}
}

func TestCountByState(t *testing.T) {
	f := newTestFleet(t)
	for i, s := range []string{"01", "02", "03"} {
		if _, err := f.Add(NewMachine{MAC: "52:54:00:00:00:" + s, Hostname: "n" + s, Image: "sha256:a"}); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			f.Observe("52:54:00:00:00:"+s, EventScript, "")
		}
	}
	f.Report("52:54:00:00:00:03", "sha256:a")
	got, err := f.CountByState()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"assigned": 1, "booting": 1, "ready": 1}, got); diff != "" {
		t.Errorf("CountByState() (-want +got):\n%s", diff)
	}
}

// BenchmarkObserveUnknown measures an event of an unknown MAC while
// another goroutine commits (as the DHCP lease group commit does):
// "view" is Observe, "update" the write transaction Observe used to open.
func BenchmarkObserveUnknown(b *testing.B) {
	for _, mode := range []string{"view", "update"} {
		b.Run(mode, func(b *testing.B) {
			f, cs := newCountingFleet(b)
			f.Add(NewMachine{MAC: "52:54:00:00:00:01", Hostname: "n1", Image: "sha256:a"})
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					f.Observe("52:54:00:00:00:01", EventOffered, "10.0.0.9")
				}
			}()
			var worst time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if mode == "view" {
					f.Observe("52:54:00:00:00:99", EventOffered, "")
				} else {
					cs.Store.Update(func(tx store.Tx) error { _, err := get(tx, "52:54:00:00:00:99"); return err })
				}
				worst = max(worst, time.Since(start))
			}
			b.StopTimer()
			close(stop)
			<-done
			b.ReportMetric(float64(worst.Microseconds()), "worst-µs")
		})
	}
}
