package tftp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// runTool runs a client tool with a deadline and returns its exit code.
func runTool(t *testing.T, name string, args ...string) int {
	t.Helper()
	path := testenv.NeedTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		t.Logf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		return ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		return -1
	}
}

// TestRealClients downloads with curl, atftp and tftp-hpa (Debian packages
// curl, atftp, tftp-hpa) and compares checksums and the options the server
// negotiated. atftp asks for windowsize; one of its downloads has more than
// 65535 blocks of 512 bytes, so block numbers wrap around inside windows.
func TestRealClients(t *testing.T) {
	root := t.TempDir()
	small := make([]byte, 5<<20+123)
	rand.Read(small)
	writeFile(t, filepath.Join(root, "small"), small)
	big := make([]byte, 65536*512+3*512+77) // block numbers wrap around
	rand.Read(big)
	writeFile(t, filepath.Join(root, "big"), big)
	ts := startServer(t, Config{Root: root})
	host, port, err := net.SplitHostPort(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		tool    string
		args    func(file, out string) []string
		file    string
		blksize int
		window  int
	}{
		{"curl", "curl", func(f, o string) []string {
			return []string{"-s", "-o", o, "tftp://" + ts.addr + "/" + f}
		}, "small", 512, 1},
		{"curl blksize 8192", "curl", func(f, o string) []string {
			return []string{"-s", "-o", o, "--tftp-blksize", "8192", "tftp://" + ts.addr + "/" + f}
		}, "small", 8192, 1},
		{"atftp window 16 blksize 1468", "atftp", func(f, o string) []string {
			return []string{"--option", "windowsize 16", "--option", "blksize 1468", "-g", "-r", f, "-l", o, host, port}
		}, "small", 1468, 16},
		{"atftp window 64 capped", "atftp", func(f, o string) []string {
			return []string{"--option", "windowsize 64", "--option", "blksize 1468", "-g", "-r", f, "-l", o, host, port}
		}, "small", 1468, DefaultMaxWindow},
		// 16 blocks of 8192 bytes overflow atftp's socket buffer: the
		// window is capped at 64 KiB.
		{"atftp window 16 blksize 8192", "atftp", func(f, o string) []string {
			return []string{"--option", "windowsize 16", "--option", "blksize 8192", "-g", "-r", f, "-l", o, host, port}
		}, "small", 8192, 8},
		{"atftp window 16 rollover", "atftp", func(f, o string) []string {
			return []string{"--option", "windowsize 16", "-g", "-r", f, "-l", o, host, port}
		}, "big", 512, 16},
		{"tftp-hpa", "tftp", func(f, o string) []string {
			return []string{"-m", "binary", host, port, "-c", "get", f, o}
		}, "small", 512, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if code := runTool(t, tc.tool, tc.args(tc.file, out)...); code != 0 {
				t.Fatalf("exit code %d", code)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := small
			if tc.file == "big" {
				want = big
			}
			if sha256.Sum256(got) != sha256.Sum256(want) {
				t.Errorf("got %d bytes sha256 %x, want %d bytes sha256 %x",
					len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
			}
			tr := ts.next(t)
			if tr.Err != nil || tr.Blksize != tc.blksize || tr.Window != tc.window {
				t.Errorf("observed %+v, want success, Blksize %d, Window %d", tr, tc.blksize, tc.window)
			}
		})
	}
	// curl maps the TFTP error code to its exit code: 68 for code 1 (file
	// not found), 69 for code 2 (access violation).
	for _, tc := range []struct {
		file string
		exit int
	}{{"missing", 68}, {"../small", 69}} {
		out := filepath.Join(t.TempDir(), "out")
		if code := runTool(t, "curl", "-s", "--path-as-is", "-o", out, "tftp://"+ts.addr+"/"+tc.file); code != tc.exit {
			t.Errorf("curl %s: exit code %d, want %d", tc.file, code, tc.exit)
		}
		ts.next(t)
	}
}
