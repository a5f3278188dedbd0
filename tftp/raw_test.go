package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TFTP opcodes (RFC 1350 section 5, RFC 2347).
const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// rawClient speaks TFTP by hand, to stall or abort where a real client would
// not.
type rawClient struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr // the request port, then the transfer's port
}

func newRawClient(t *testing.T, addr string) *rawClient {
	t.Helper()
	server, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, server: server}
}

// rrq sends a read request with options given as name, value pairs.
func (c *rawClient) rrq(name string, opts ...string) {
	c.t.Helper()
	p := binary.BigEndian.AppendUint16(nil, opRRQ)
	for _, s := range append([]string{name, "octet"}, opts...) {
		p = append(append(p, s...), 0)
	}
	c.send(p)
}

func (c *rawClient) send(p []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(p, c.server); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet's opcode and body, and remembers the
// transfer's port.
func (c *rawClient) recv() (uint16, []byte) {
	c.t.Helper()
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	if n < 2 {
		c.t.Fatalf("short reply %x", buf[:n])
	}
	c.server = from
	return binary.BigEndian.Uint16(buf), buf[2:n]
}

// recvErr is recv for another goroutine: it returns opcode 0 on error.
func (c *rawClient) recvErr() (uint16, []byte) {
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil || n < 4 {
		return 0, nil
	}
	c.server = from
	return binary.BigEndian.Uint16(buf), buf[2:n]
}

// sendErr is send for another goroutine: errors show up as a stalled
// transfer.
func (c *rawClient) sendErr(p []byte) {
	c.conn.WriteToUDP(p, c.server)
}

// sendError sends an ERROR packet with code to the transfer's port.
func (c *rawClient) sendError(code uint16, msg string) {
	c.t.Helper()
	p := binary.BigEndian.AppendUint16(nil, opERROR)
	p = binary.BigEndian.AppendUint16(p, code)
	c.send(append(append(p, msg...), 0))
}

// parseOACK turns an OACK body into its options.
func parseOACK(body []byte) map[string]string {
	f := bytes.Split(bytes.TrimSuffix(body, []byte{0}), []byte{0})
	opts := map[string]string{}
	for i := 0; i+1 < len(f); i += 2 {
		opts[string(f[i])] = string(f[i+1])
	}
	return opts
}

// TestBlksizeNegotiated checks on the wire that pin honours a large blksize
// and reports tsize, as OVMF asks.
func TestBlksizeNegotiated(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "snponly.efi"), make([]byte, 10_000))
	ts := startServer(t, Config{Root: root})
	c := newRawClient(t, ts.addr)
	c.rrq("snponly.efi", "tsize", "0", "blksize", "1468")
	op, body := c.recv()
	if op != opOACK {
		t.Fatalf("reply opcode %d (%q), want OACK", op, body)
	}
	opts := parseOACK(body)
	if opts["blksize"] != "1468" || opts["tsize"] != "10000" {
		t.Errorf("OACK options %v, want blksize 1468, tsize 10000", opts)
	}
	c.send([]byte{0, opACK, 0, 0})
	op, body = c.recv()
	if op != opDATA || len(body) != 2+1468 {
		t.Errorf("first DATA: opcode %d, %d data bytes; want DATA with 1468", op, len(body)-2)
	}
	c.sendError(0, "enough")
	ts.next(t)
}

// TestSizeProbe plays OVMF: ask tsize=0, blksize=1468, windowsize=4, read
// tsize from the OACK, then abort with error 8. That is logged at Debug as a
// size probe, not as a failure.
func TestSizeProbe(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "snponly.efi"), make([]byte, 5000))
	ts := startServer(t, Config{Root: root})
	c := newRawClient(t, ts.addr)
	c.rrq("snponly.efi", "tsize", "0", "blksize", "1468", "windowsize", "4")
	op, body := c.recv()
	want := map[string]string{"tsize": "5000", "blksize": "1468", "windowsize": "4"}
	if diff := cmp.Diff(want, parseOACK(body)); op != opOACK || diff != "" {
		t.Fatalf("reply opcode %d %q, want OACK; options (-want +got):\n%s", op, body, diff)
	}
	c.sendError(8, "only wanted the size")
	tr := ts.next(t)
	if !errors.Is(tr.Err, ErrSizeProbe) || tr.Blksize != 1468 || tr.Window != 4 {
		t.Errorf("observed %+v, want ErrSizeProbe, Blksize 1468, Window 4", tr)
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, `level=DEBUG msg="size probe"`) || strings.Contains(logs, "level=WARN") {
		t.Errorf("log = %s\nwant one DEBUG size probe line, no WARN", logs)
	}
}

// TestMaxTransfers holds the only slot with a client that never ACKs, checks
// that a second request is refused as busy, then frees the slot.
func TestMaxTransfers(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "big"), make([]byte, 100_000))
	ts := startServer(t, Config{Root: root, MaxTransfers: 1, Timeout: time.Second})

	stalled := newRawClient(t, ts.addr)
	stalled.rrq("big")
	if op, _ := stalled.recv(); op != opDATA {
		t.Fatalf("stalled client got opcode %d, want DATA", op)
	}
	// The first transfer now holds the slot and waits for an ACK.
	_, _, err := get(ts.client(t), "big")
	if err == nil || !strings.Contains(err.Error(), "server busy") {
		t.Errorf("second get = %v, want server busy", err)
	}
	if tr := ts.next(t); !errors.Is(tr.Err, ErrBusy) {
		t.Errorf("observed %+v, want ErrBusy", tr)
	}
	if !strings.Contains(ts.logs.String(), `msg="refused: busy"`) {
		t.Errorf("log has no busy line:\n%s", ts.logs)
	}

	stalled.sendError(0, "giving up")
	if tr := ts.next(t); tr.Err == nil || errors.Is(tr.Err, ErrBusy) {
		t.Errorf("stalled transfer observed %+v, want a failure", tr)
	}
	if _, _, err := get(ts.client(t), "big"); err != nil {
		t.Errorf("get after slot freed = %v", err)
	}
}

// TestCancelAbortsTransfer checks that a transfer still moving when ctx
// ends stops at its next block with "server shutting down".
func TestCancelAbortsTransfer(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "big"), make([]byte, 100_000))
	ts := startServer(t, Config{Root: root})
	c := newRawClient(t, ts.addr)
	c.rrq("big")
	if op, _ := c.recv(); op != opDATA {
		t.Fatalf("got opcode %d, want DATA", op)
	}
	ts.cancel()
	c.send([]byte{0, opACK, 0, 1})
	if op, body := c.recv(); op != opERROR || !bytes.Contains(body, []byte("server shutting down")) {
		t.Errorf("after cancel got opcode %d %q, want ERROR server shutting down", op, body)
	}
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if tr := ts.next(t); !errors.Is(tr.Err, errShutdown) {
		t.Errorf("observed %+v, want errShutdown", tr)
	}
	if !strings.Contains(ts.logs.String(), `msg="aborted: shutting down"`) {
		t.Errorf("log has no shutdown line:\n%s", ts.logs)
	}
}

// TestCancelWaitsForStalledTransfer checks that Serve returns after ctx ends
// with a transfer stuck waiting for an ACK, once pin gives up on it.
func TestCancelWaitsForStalledTransfer(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "big"), make([]byte, 100_000))
	ts := startServer(t, Config{Root: root, Timeout: 100 * time.Millisecond, Retries: 1})
	c := newRawClient(t, ts.addr)
	c.rrq("big")
	if op, _ := c.recv(); op != opDATA {
		t.Fatalf("got opcode %d, want DATA", op)
	}
	start := time.Now()
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	// (Retries+1)*Timeout plus up to Retries seconds of pin's backoff.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Serve took %v to return after cancel", d)
	}
	if tr := ts.next(t); tr.Err == nil {
		t.Errorf("stalled transfer observed %+v, want an error", tr)
	}
}
