package fleet

import (
	"errors"
	"maps"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/store"
)

// harness is a Fleet on a real bbolt file, with a clock the test moves
// and an image store of a set of IDs.
type harness struct {
	t    testing.TB
	path string
	st   *store.Bolt
	f    *Fleet

	mu     sync.Mutex
	now    time.Time
	images map[string]bool
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "kiln.db"),
		now:    time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC),
		images: map[string]bool{"sha256:a": true, "sha256:b": true, "sha256:c": true, "sha256:d": true}}
	h.open()
	t.Cleanup(func() { h.st.Close() })
	return h
}

// open opens the bbolt file and a new Fleet over it, as a restarted kiln
// does.
func (h *harness) open() {
	h.t.Helper()
	st, err := store.OpenBolt(h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	f, err := New(Config{Store: st, Now: h.clock, ImageExists: h.imageExists, BootTimeout: 10 * time.Minute, MaxDiscovered: 50})
	if err != nil {
		h.t.Fatal(err)
	}
	h.st, h.f = st, f
}

// reopen closes the store and opens it again, like a kill -9 and a
// restart: bbolt's file only holds committed transactions.
func (h *harness) reopen() {
	h.t.Helper()
	if err := h.st.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
}

func (h *harness) imageExists(id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.images[id] {
		return errors.New("not in the image store")
	}
	return nil
}

func (h *harness) dropImage(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.images, id)
}

// snapshot returns every stored record, byte for byte.
func (h *harness) snapshot() map[string]string {
	h.t.Helper()
	out, err := snapshot(h.st)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func snapshot(st store.Store) (map[string]string, error) {
	out := map[string]string{}
	err := st.View(func(tx store.Tx) error {
		return tx.ForEach(bucket, func(k string, v []byte) error {
			out[k] = string(v)
			return nil
		})
	})
	return out, err
}

// unchanged fails the test if the store differs from before.
func (h *harness) unchanged(before map[string]string, what string) {
	h.t.Helper()
	if after := h.snapshot(); !maps.Equal(before, after) {
		h.t.Errorf("%s wrote to the store (-before +after):\n%s", what, cmp.Diff(before, after))
	}
}

func (h *harness) get(mac string) Machine {
	h.t.Helper()
	m, err := h.f.Get(mac)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *harness) must(m Machine, err error) Machine {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *harness) boot(mac string, firmware BootKind) BootPlan {
	h.t.Helper()
	p, err := h.f.StartBoot(mac, firmware)
	if err != nil {
		h.t.Fatalf("StartBoot(%s) = %v", mac, err)
	}
	return p
}
