package debian

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fakeScript stands in for mmdebstrap. It records its arguments and
// environment, then acts as $FAKE_MODE says: "ok" writes a fake tar to
// stdout, "fail" exits 1, "hang" starts a child and waits, "stubborn" does
// so ignoring SIGTERM. Children write their PIDs to $FAKE_DIR/pids.
const fakeScript = `#!/bin/sh
printf '%s\n' "$@" > "$FAKE_DIR/args"
env > "$FAKE_DIR/env"
echo "I: fake mmdebstrap starting" >&2
case "$FAKE_MODE" in
ok)
	printf 'fake tar'
	echo "I: success" >&2
	;;
fail)
	echo "E: something broke" >&2
	exit 1
	;;
hang)
	sleep 300 & echo $! >> "$FAKE_DIR/pids"
	echo $$ >> "$FAKE_DIR/pids"
	echo "I: hanging" >&2
	wait
	;;
stubborn)
	trap '' TERM
	sh -c 'trap "" TERM; sleep 300' & echo $! >> "$FAKE_DIR/pids"
	echo $$ >> "$FAKE_DIR/pids"
	echo "I: hanging" >&2
	wait
	;;
esac
`

// fake puts a fake mmdebstrap first in PATH, in mode, and returns the
// directory it records into.
func fake(t *testing.T, mode string) string {
	t.Helper()
	bin, rec := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "mmdebstrap"), []byte(fakeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("FAKE_DIR", rec)
	t.Setenv("FAKE_MODE", mode)
	return rec
}

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestBootstrapFakeOK(t *testing.T) {
	rec := fake(t, "ok")
	dir, tmp := t.TempDir(), t.TempDir()
	out := filepath.Join(dir, "root.tar")
	var lines []string
	spec := Spec{Suite: "bookworm", Packages: []string{"busybox-static"}, SourceDateEpoch: 1234}
	err := Bootstrap(context.Background(), spec, out, Options{
		Progress: func(l string) { lines = append(lines, l) }, TempDir: tmp, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("Bootstrap() = %v", err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "fake tar" {
		t.Errorf("Bootstrap wrote %q, %v; want mmdebstrap's stdout", b, err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("Bootstrap wrote %s with mode %v, %v; want 0644", out, fi.Mode(), err)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("Bootstrap left %v in %s, want only root.tar", got, dir)
	}
	if got := entries(t, tmp); len(got) != 0 {
		t.Errorf("Bootstrap left %v in its TempDir", got)
	}
	if want := []string{"I: fake mmdebstrap starting", "I: success"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("Progress got %q, want %q", lines, want)
	}
	args, _ := os.ReadFile(filepath.Join(rec, "args"))
	mode := "auto"
	if os.Geteuid() == 0 {
		mode = "unshare"
	}
	if got, want := string(args), strings.Join(spec.normalized().args(mode), "\n")+"\n"; got != want {
		t.Errorf("mmdebstrap args = %q, want %q", got, want)
	}
	env, _ := os.ReadFile(filepath.Join(rec, "env"))
	if !strings.Contains(string(env), "SOURCE_DATE_EPOCH=1234\n") || !strings.Contains(string(env), "TMPDIR="+tmp+"/kiln-mmdebstrap-") {
		t.Errorf("mmdebstrap env lacks SOURCE_DATE_EPOCH=1234 or TMPDIR under %s:\n%s", tmp, env)
	}
	// A second run must not overwrite the archive.
	if err := Bootstrap(context.Background(), spec, out, Options{TempDir: tmp}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Bootstrap(existing out) = %v, want an error", err)
	}
}

func TestBootstrapFakeFail(t *testing.T) {
	fake(t, "fail")
	dir, tmp := t.TempDir(), t.TempDir()
	out := filepath.Join(dir, "root.tar")
	err := Bootstrap(context.Background(), Spec{Suite: "bookworm"}, out, Options{TempDir: tmp})
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "E: something broke") {
		t.Errorf("Bootstrap() = %v, want mmdebstrap's exit status and last output", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("failed Bootstrap left %v in %s", got, dir)
	}
	if got := entries(t, tmp); len(got) != 0 {
		t.Errorf("failed Bootstrap left %v in its TempDir", got)
	}
	// Invalid specs fail before running anything.
	if err := Bootstrap(context.Background(), Spec{Suite: "Bookworm"}, out, Options{}); !errors.As(err, new(*FieldError)) {
		t.Errorf("Bootstrap(invalid spec) = %v, want a *FieldError", err)
	}
}

// TestBootstrapFakeCancel cancels a hanging mmdebstrap and checks that it
// and its children are gone and nothing is left behind.
func TestBootstrapFakeCancel(t *testing.T) {
	for _, mode := range []string{"hang", "stubborn"} {
		t.Run(mode, func(t *testing.T) {
			rec := fake(t, mode)
			defer func(d time.Duration) { killGrace = d }(killGrace)
			killGrace = 500 * time.Millisecond
			dir, tmp := t.TempDir(), t.TempDir()
			out := filepath.Join(dir, "root.tar")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			started := make(chan struct{})
			var once bool
			errc := make(chan error, 1)
			go func() {
				errc <- Bootstrap(ctx, Spec{Suite: "bookworm"}, out, Options{TempDir: tmp, Progress: func(l string) {
					if l == "I: hanging" && !once {
						once = true
						close(started)
					}
				}})
			}()
			select {
			case <-started:
			case err := <-errc:
				t.Fatalf("Bootstrap() = %v before hanging", err)
			case <-time.After(10 * time.Second):
				t.Fatal("fake mmdebstrap did not start")
			}
			start := time.Now()
			cancel()
			var err error
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("Bootstrap did not return after cancel")
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Bootstrap(canceled) = %v, want context.Canceled", err)
			}
			t.Logf("returned %v after cancel", time.Since(start).Round(time.Millisecond))
			if got := entries(t, dir); len(got) != 0 {
				t.Errorf("canceled Bootstrap left %v in %s", got, dir)
			}
			if got := entries(t, tmp); len(got) != 0 {
				t.Errorf("canceled Bootstrap left %v in its TempDir", got)
			}
			pids, _ := os.ReadFile(filepath.Join(rec, "pids"))
			for _, f := range strings.Fields(string(pids)) {
				pid, _ := strconv.Atoi(f)
				if alive(pid) {
					t.Errorf("process %d of the canceled mmdebstrap still runs", pid)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
	}
}

// alive reports whether pid runs (and is not a zombie waiting for init).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
