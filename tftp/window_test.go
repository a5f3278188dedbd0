package tftp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestWindowNegotiated checks on the wire the windowsize (RFC 7440) the
// server grants: what was asked, capped by MaxWindow, never when MaxWindow
// is 1.
func TestWindowNegotiated(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), make([]byte, 3000))
	for _, tc := range []struct {
		name      string
		maxWindow int
		ask       string
		want      string // "" when not in the OACK
	}{
		{"ovmf", 0, "4", "4"},
		{"default cap", 0, "64", strconv.Itoa(DefaultMaxWindow)},
		{"small cap", 8, "100", "8"},
		{"one asked", 8, "1", "1"},
		{"off", 1, "4", ""},
		{"zero asked", 8, "0", ""},
		{"too large", 8, "65536", ""},
		{"not a number", 8, "four", ""},
		{"leading zero", 8, "04", "4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{Root: root, MaxWindow: tc.maxWindow})
			c := newRawClient(t, ts.addr)
			c.rrq("f", "windowsize", tc.ask, "blksize", "1024")
			op, body := c.recv()
			if op != opOACK {
				t.Fatalf("reply opcode %d %q, want OACK", op, body)
			}
			want := map[string]string{"blksize": "1024"}
			if tc.want != "" {
				want["windowsize"] = tc.want
			}
			if diff := cmp.Diff(want, parseOACK(body)); diff != "" {
				t.Errorf("OACK options (-want +got):\n%s", diff)
			}
			c.send([]byte{0, opACK, 0, 0})
			w, _ := strconv.Atoi(tc.want)
			w = max(w, 1)
			// 3000 bytes at blksize 1024 are blocks 1, 2, 3: the server
			// sends min(w, 3) of them before waiting.
			for b := 1; b <= min(w, 3); b++ {
				op, body := c.recv()
				if op != opDATA || binary.BigEndian.Uint16(body) != uint16(b) {
					t.Fatalf("packet %d: opcode %d block %d, want DATA block %d", b, op, binary.BigEndian.Uint16(body), b)
				}
			}
			if w < 3 {
				c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if n, _, err := c.conn.ReadFromUDP(make([]byte, 2000)); err == nil {
					t.Errorf("got a %d-byte packet before ACKing a window of %d", n, w)
				}
			}
			c.sendError(0, "enough")
			if tr := ts.next(t); tr.Blksize != 1024 || tr.Window != w {
				t.Errorf("observed Blksize %d, Window %d; want 1024, %d", tr.Blksize, tr.Window, w)
			}
		})
	}
}

// TestWindowRollover downloads with the fork's client at blksize 512 and
// windowsize 16 a file of more than 65535 blocks, so block numbers wrap
// around inside windows, and compares checksums.
func TestWindowRollover(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 65536*512+7*512+100) // wraps, and the last window is partial
	rand.Read(data)
	writeFile(t, filepath.Join(root, "big"), data)
	ts := startServer(t, Config{Root: root, MaxWindow: 16})
	c := ts.client(t)
	c.SetWindowSize(16)
	c.RequestTSize(true)
	got, size, err := get(c, "big")
	if err != nil {
		t.Fatalf("get(big) = %v", err)
	}
	if size != int64(len(data)) || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Errorf("got %d bytes (tsize %d), sha256 %x; want %d bytes, sha256 %x",
			len(got), size, sha256.Sum256(got), len(data), sha256.Sum256(data))
	}
	if tr := ts.next(t); tr.Err != nil || tr.Window != 16 || tr.Blksize != 512 || tr.Bytes != int64(len(data)) {
		t.Errorf("observed %+v, want %d bytes, Window 16, Blksize 512", tr, len(data))
	}
}

// TestErrorCodes checks the RFC 1350 error code of each refusal.
func TestErrorCodes(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), []byte("x"))
	ts := startServer(t, Config{Root: root})
	for _, tc := range []struct {
		name, file string
		op         uint16
		code       uint16
		msg        string
	}{
		{"missing", "nope", opRRQ, 1, "file not found"},
		{"leaves root", "../f", opRRQ, 2, "access violation"},
		{"directory", ".", opRRQ, 2, "access violation"},
		{"write", "up", 2, 2, "access violation: server is read-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRawClient(t, ts.addr)
			p := binary.BigEndian.AppendUint16(nil, tc.op)
			c.send(append(append(append(p, tc.file...), 0), "octet\x00"...))
			op, body := c.recv()
			if op != opERROR || len(body) < 3 {
				t.Fatalf("reply opcode %d %q, want ERROR", op, body)
			}
			code, msg := binary.BigEndian.Uint16(body), string(bytes.TrimRight(body[2:], "\x00"))
			if code != tc.code || msg != tc.msg {
				t.Errorf("ERROR code %d %q, want %d %q", code, msg, tc.code, tc.msg)
			}
			ts.next(t)
		})
	}
}

// TestEmptyFileTSize checks that tsize 0 is answered for an empty file.
func TestEmptyFileTSize(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "empty"), nil)
	ts := startServer(t, Config{Root: root})
	c := ts.client(t)
	c.RequestTSize(true)
	got, size, err := get(c, "empty")
	if err != nil || len(got) != 0 || size != 0 {
		t.Errorf("get(empty) = %d bytes, tsize %d, %v; want 0 bytes, tsize 0", len(got), size, err)
	}
}
