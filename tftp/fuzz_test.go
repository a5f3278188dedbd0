package tftp

import (
	"context"
	"encoding/binary"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	ptftp "github.com/pin/tftp/v3"
)

// requestLen is how much of a request datagram pin reads: its request
// buffer holds 516 bytes and the rest is cut off.
const requestLen = 516

// fuzzMaxWindow is the MaxWindow of FuzzRequest's server.
const fuzzMaxWindow = 8

// encodeRequest builds a request packet, options sorted by name.
func encodeRequest(op uint16, name, mode string, opts map[string]string) []byte {
	p := binary.BigEndian.AppendUint16(nil, op)
	p = append(append(p, name...), 0)
	p = append(append(p, mode...), 0)
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		p = append(append(p, k...), 0)
		p = append(append(p, opts[k]...), 0)
	}
	return p
}

// FuzzRequest parses arbitrary bytes as a request, as pin's server does,
// checks that a parsed request re-encodes to an equivalent one, then sends
// it to a live server and checks the first reply: an OACK holds only
// options that were asked, with blksize between 512 and both 65464 and
// what was asked, windowsize between 1 and MaxWindow, what was asked and
// 64 KiB of blocks, tsize the file's size, all in canonical decimal; a file is only
// ever sent if the name cleans to a file of the root; a refusal carries
// error code 1 or 2.
//
// Seeds: testdata/fuzz/FuzzRequest and every ../testdata/captures/tftp/*.bin
// (raw UDP payloads captured from firmware).
func FuzzRequest(f *testing.F) {
	captures, _ := filepath.Glob("../testdata/captures/tftp/*.bin")
	for _, c := range captures {
		p, err := os.ReadFile(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add(encodeRequest(1, "f", "octet", map[string]string{"tsize": "0", "blksize": "1468", "windowsize": "4"}))

	root := f.TempDir()
	files := map[string]int{"f": 3000, "dir/empty": 0} // cleaned name -> size
	for name, size := range files {
		writeFile(f, filepath.Join(root, name), make([]byte, size))
	}
	s, err := New(Config{Root: root, MaxWindow: fuzzMaxWindow, Timeout: time.Second, Retries: 1})
	if err != nil {
		f.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	f.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	waitPktinfo(f, conn)

	f.Fuzz(func(t *testing.T, p []byte) {
		wire := p[:min(len(p), requestLen)]
		op, name, mode, opts, err := ptftp.ParseRequest(wire)
		if err != nil {
			return // pin drops it without an answer
		}
		if op != 1 && op != 2 {
			t.Fatalf("ParseRequest(%q) opcode %d", wire, op)
		}
		op2, name2, mode2, opts2, err := ptftp.ParseRequest(encodeRequest(op, name, mode, opts))
		if err != nil || op2 != op || name2 != name || mode2 != mode ||
			!cmp.Equal(opts2, opts, cmpopts.EquateEmpty()) {
			t.Errorf("ParseRequest(%q) = %d %q %q %v, re-encoded: %d %q %q %v %v",
				wire, op, name, mode, opts, op2, name2, mode2, opts2, err)
		}

		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WriteToUDP(wire, addr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("request %q: no reply: %v", wire, err)
		}
		reply := buf[:n]
		if len(reply) < 4 {
			t.Fatalf("request %q: short reply %x", wire, reply)
		}
		rop := binary.BigEndian.Uint16(reply)
		if rop != opERROR {
			// End the transfer; the server frees its slot.
			c.WriteToUDP([]byte{0, opERROR, 0, 0, 0}, from)
		}

		cleaned, cerr := cleanPath(name)
		size, served := files[cleaned]
		served = served && cerr == nil && op == 1
		switch {
		case !served:
			if rop != opERROR {
				t.Fatalf("request %q (op %d, name %q): reply opcode %d, want ERROR", wire, op, name, rop)
			}
			if code := binary.BigEndian.Uint16(reply[2:]); code != 1 && code != 2 {
				t.Errorf("request %q: ERROR code %d %q, want 1 or 2", wire, code, reply[4:])
			}
		case rop == opOACK:
			got := parseOACK(reply[2:])
			want := negotiate(opts, size)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("request %q: OACK options (-want +got):\n%s", wire, diff)
			}
		case rop == opDATA:
			if want := negotiate(opts, size); len(want) != 0 {
				t.Errorf("request %q: DATA without OACK, want OACK %v", wire, want)
			}
			if block := binary.BigEndian.Uint16(reply[2:]); block != 1 || len(reply)-4 != min(size, 512) {
				t.Errorf("request %q: DATA block %d with %d bytes, want block 1 with %d", wire, block, len(reply)-4, min(size, 512))
			}
		default:
			t.Errorf("request %q for a served file: reply %x", wire, reply)
		}
	})
}

// negotiate is the model of the server's option negotiation (RFC 2347,
// 2348, 2349, 7440) that FuzzRequest checks OACKs against: the options a
// client asking opts for a file of size bytes must get.
func negotiate(opts map[string]string, size int) map[string]string {
	want := map[string]string{}
	blksize := 512
	if v, ok := opts["blksize"]; ok {
		// Loopback's MTU allows any valid blksize.
		if n, err := strconv.Atoi(v); err == nil && n >= 512 && n <= 65464 {
			want["blksize"] = strconv.Itoa(n)
			blksize = n
		}
	}
	if _, ok := opts["tsize"]; ok {
		want["tsize"] = strconv.Itoa(size)
	}
	if v, ok := opts["windowsize"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 65535 {
			// At most 64 KiB of data per window.
			want["windowsize"] = strconv.Itoa(min(n, fuzzMaxWindow, max(64<<10/blksize, 1)))
		}
	}
	return want
}
