package tftp

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// openFDs counts the file descriptors of the test process.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds: %v", err)
	}
	return len(ents)
}

// waitBaseline waits until the goroutines and fds of the process are back
// to at most their baseline (plus slack for the runtime and the test's own
// helpers), and fails naming what leaked.
func waitBaseline(t *testing.T, goroutines, fds int) {
	t.Helper()
	var g, f int
	for range 100 {
		g, f = runtime.NumGoroutine(), openFDs(t)
		if g <= goroutines+2 && f <= fds {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("after 5s: %d goroutines, %d fds; baseline %d, %d", g, f, goroutines, fds)
}

// TestVanishedClients fills every slot with clients that send a request and
// vanish, and floods the server with more of them. The flood is refused at
// once and costs nothing once answered; a good client is refused while the
// slots are held, gets the file once the retry budget frees them, and
// nothing is left behind.
func TestVanishedClients(t *testing.T) {
	const maxTransfers, extra = 4, 100
	root := t.TempDir()
	data := make([]byte, 200_000)
	writeFile(t, filepath.Join(root, "big"), data)
	const timeout, retries = 200 * time.Millisecond, 1
	ts := startServer(t, Config{Root: root, MaxTransfers: maxTransfers, Timeout: timeout, Retries: retries})
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	// The first maxTransfers get DATA block 1 and stall; then the flood.
	for i := range maxTransfers + extra {
		c := newRawClient(t, ts.addr)
		c.rrq("big")
		if i < maxTransfers {
			if op, _ := c.recv(); op != opDATA {
				t.Fatalf("client %d got opcode %d, want DATA", i, op)
			}
		}
		c.conn.Close() // vanish
	}
	start := time.Now()
	for i := range extra {
		if tr := ts.next(t); !errors.Is(tr.Err, ErrBusy) {
			t.Fatalf("flood transfer %d observed %+v, want ErrBusy", i, tr)
		}
	}
	_, _, err := get(ts.client(t), "big")
	if err == nil {
		t.Fatal("good client got the file while every slot was held")
	}
	if tr := ts.next(t); !errors.Is(tr.Err, ErrBusy) {
		t.Fatalf("good client observed %+v, want ErrBusy", tr)
	}

	// (Retries+1)*Timeout plus up to Retries seconds of pin's backoff.
	budget := (retries+1)*timeout + retries*time.Second
	for i := range maxTransfers {
		tr := ts.next(t)
		if tr.Err == nil || errors.Is(tr.Err, ErrBusy) {
			t.Errorf("stalled transfer %d observed %+v, want a timeout", i, tr)
		}
	}
	if d := time.Since(start); d > budget+time.Second {
		t.Errorf("stalled transfers held their slots %v, want at most %v", d, budget)
	}
	got, _, err := get(ts.client(t), "big")
	if err != nil || len(got) != len(data) {
		t.Fatalf("good client after the slots came back: %d bytes, %v", len(got), err)
	}
	ts.next(t)
	waitBaseline(t, goroutines, fds)
}

// TestSlowClient checks that a client ACKing each block just before the
// timeout holds one slot and nothing else: other clients download at full
// speed meanwhile, and the slow one is not dropped.
func TestSlowClient(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "small"), make([]byte, 10*512+1))
	writeFile(t, filepath.Join(root, "big"), make([]byte, 1<<20))
	ts := startServer(t, Config{Root: root, MaxTransfers: 2, Timeout: 500 * time.Millisecond})

	slowDone := make(chan error, 1)
	slow := newRawClient(t, ts.addr)
	slow.rrq("small")
	go func() {
		for {
			op, body := slow.recvErr()
			if op != opDATA {
				slowDone <- errors.New("slow client: not DATA")
				return
			}
			time.Sleep(300 * time.Millisecond)
			slow.sendErr([]byte{0, opACK, body[0], body[1]})
			if len(body) < 2+512 {
				slowDone <- nil
				return
			}
		}
	}()

	start := time.Now()
	for i := range 5 {
		got, _, err := get(ts.client(t), "big")
		if err != nil || len(got) != 1<<20 {
			t.Fatalf("download %d next to the slow client: %d bytes, %v", i, len(got), err)
		}
		if tr := ts.next(t); tr.Err != nil {
			t.Fatalf("download %d observed %+v", i, tr)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("5 MiB next to a slow client took %v", d)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("slow client finished (%v) before the others: the test proves nothing", err)
	default:
	}
	select {
	case err := <-slowDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slow client did not finish")
	}
	if tr := ts.next(t); tr.Err != nil || tr.Bytes != 10*512+1 {
		t.Errorf("slow client observed %+v, want success", tr)
	}
}
