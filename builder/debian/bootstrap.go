package debian

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// killGrace is how long mmdebstrap gets, after SIGTERM, to unmount and
// clean up before its process group is killed. Tests shorten it.
var killGrace = 5 * time.Second

// tailLines is how many of mmdebstrap's last output lines an error quotes.
const tailLines = 20

// customizeHook runs (under sh, with the root as $1) after all packages are
// installed. It replaces the host files mmdebstrap copies in with fixed
// ones and empties logs that maintainer scripts left.
const customizeHook = `rm -f "$1/etc/resolv.conf" "$1/etc/hostname" && ` +
	`printf 'localhost\n' > "$1/etc/hostname" && chmod 0644 "$1/etc/hostname" && ` +
	`if [ -d "$1/var/log" ]; then find "$1/var/log" -type f -exec truncate -s 0 {} +; fi`

// fileMirrorHooks makes a file:// mirror visible inside the root while
// apt runs there, and removes it afterwards.
const fileMirrorHooks = "/usr/share/mmdebstrap/hooks/file-mirror-automount"

// slimOptions are the dpkg options Spec.Slim adds.
var slimOptions = []string{
	"path-exclude=/usr/share/doc/*",
	"path-include=/usr/share/doc/*/copyright",
	"path-exclude=/usr/share/man/*",
	"path-exclude=/usr/share/info/*",
	"path-exclude=/usr/share/locale/*",
	"path-include=/usr/share/locale/locale.alias",
	"path-exclude=/usr/share/lintian/*",
}

// Modes are the mmdebstrap modes Options.Mode may name.
var Modes = []string{"auto", "sudo", "root", "unshare", "fakeroot", "fakechroot"}

// args returns mmdebstrap's arguments for the normalized spec s, writing
// the tar to standard output.
func (s Spec) args(mode string) []string {
	a := []string{
		"--mode=" + mode,
		"--format=tar",
		"--variant=" + s.Variant,
		"--architectures=" + s.Arch,
		"--components=" + strings.Join(s.Components, ","),
	}
	if len(s.Packages) > 0 {
		a = append(a, "--include="+strings.Join(s.Packages, ","))
	}
	if s.Slim {
		for _, o := range slimOptions {
			a = append(a, "--dpkgopt="+o)
		}
	}
	if strings.HasPrefix(s.Mirror, "file:") {
		a = append(a, "--hook-dir="+fileMirrorHooks)
	}
	a = append(a, "--customize-hook="+customizeHook, "--", s.Suite, "-")
	if s.Mirror != "" {
		a = append(a, s.Mirror)
	}
	return a
}

// mode returns the mmdebstrap mode to run.
func (o Options) mode() (string, error) {
	switch {
	case o.Mode == "" && os.Geteuid() == 0:
		return "unshare", nil
	case o.Mode == "":
		return "auto", nil
	case slices.Contains(Modes, o.Mode):
		return o.Mode, nil
	}
	return "", fmt.Errorf("invalid mmdebstrap mode %q: want one of %s", o.Mode, strings.Join(Modes, ", "))
}

// Bootstrap runs mmdebstrap for s and writes the root as an uncompressed
// tar archive (pax format, names starting "./", with device nodes and
// extended attributes) to the new file out, mode 0644. out must not
// exist; its directory must. The archive is written next to out and linked
// into place once complete. On error, including ctx ending, nothing is
// left at out: mmdebstrap's process group gets SIGTERM, then SIGKILL five
// seconds later, and its temporary files are removed. It needs network
// access to the mirror.
func Bootstrap(ctx context.Context, s Spec, out string, opt Options) (err error) {
	if err := s.Validate(); err != nil {
		return err
	}
	s = s.normalized()
	mode, err := opt.mode()
	if err != nil {
		return err
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("suite", s.Suite, "variant", s.Variant, "arch", s.Arch)
	mmdebstrap, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return fmt.Errorf("bootstrapping %s: %w", s.Suite, err)
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("bootstrapping %s: %s already exists", s.Suite, out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("bootstrapping %s: %w", s.Suite, err)
	}

	partial, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.partial")
	if err != nil {
		return fmt.Errorf("bootstrapping %s: %w", s.Suite, err)
	}
	defer func() {
		partial.Close()
		if rerr := os.Remove(partial.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr) // on success, publish removed it
		}
	}()
	work, err := os.MkdirTemp(opt.TempDir, "kiln-mmdebstrap-")
	if err != nil {
		return fmt.Errorf("bootstrapping %s: %w", s.Suite, err)
	}
	defer func() {
		if rerr := removeWork(work); rerr != nil {
			// After success, out is in place: only warn.
			log.Warn("removing mmdebstrap's temporary directory", "dir", work, "err", rerr)
			if err != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()

	args := s.args(mode)
	log.Info("bootstrapping", "packages", s.Packages, "mirror", s.Mirror, "mode", mode)
	start := time.Now()
	tail := &lineWriter{progress: opt.Progress, log: log}
	if err := run(ctx, mmdebstrap, args, work, s.SourceDateEpoch, partial, tail); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("bootstrapping %s: %w", s.Suite, ctx.Err())
		}
		return fmt.Errorf("bootstrapping %s: mmdebstrap: %w; its last output:\n%s", s.Suite, err, tail.tail())
	}
	if err := partial.Chmod(0o644); err != nil {
		return fmt.Errorf("bootstrapping %s: %w", s.Suite, err)
	}
	if err := partial.Sync(); err != nil {
		return fmt.Errorf("bootstrapping %s: writing %s: %w", s.Suite, out, err)
	}
	if err := partial.Close(); err != nil {
		return fmt.Errorf("bootstrapping %s: writing %s: %w", s.Suite, out, err)
	}
	if err := publish(partial.Name(), out); err != nil {
		return fmt.Errorf("bootstrapping %s: %w", s.Suite, err)
	}
	log.Info("bootstrapped", "out", out, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// run runs mmdebstrap in its own process group with stdout to out and
// stderr to errw, and waits for it. When ctx ends, the group gets SIGTERM
// and, killGrace later, SIGKILL: mmdebstrap ignores SIGTERM at times (its
// children run with the signal ignored while it forks), and in unshare
// mode a killed run leaves nothing mounted.
func run(ctx context.Context, bin string, args []string, tmpdir string, epoch int64, out *os.File, errw io.Writer) error {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(epoch, 10),
		"TMPDIR="+tmpdir,
	)
	cmd.Stdout = out
	cmd.Stderr = errw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Stop waiting for output held open by a stray process killGrace
	// after mmdebstrap exits.
	cmd.WaitDelay = killGrace
	if err := cmd.Start(); err != nil {
		return err
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(killGrace):
			syscall.Kill(-pgid, syscall.SIGKILL)
			err = <-done
		}
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		// mmdebstrap failed or was stopped: make sure none of the
		// processes it started (apt, dpkg, maintainer scripts) lives
		// on, and wait for them to go before their files are removed.
		// While any lives, the group ID cannot be reused.
		syscall.Kill(-pgid, syscall.SIGKILL)
		waitGroupGone(pgid, killGrace)
	}
	return err
}

// waitGroupGone waits up to limit for the process group to have no
// members left but zombies.
func waitGroupGone(pgid int, limit time.Duration) {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !groupAlive(pgid) {
			return
		}
	}
}

// groupAlive reports whether a process of the group, other than a zombie,
// exists.
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state, ppid,
		// pgrp, ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// publish moves the finished archive from partial to out, failing if out
// appeared meanwhile.
func publish(partial, out string) error {
	err := os.Link(partial, out)
	switch {
	case err == nil:
		return os.Remove(partial)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s already exists", out)
	}
	// The filesystem has no hard links: rename, after checking again.
	if _, serr := os.Lstat(out); serr == nil {
		return fmt.Errorf("%s already exists", out)
	}
	return os.Rename(partial, out)
}

// removeWork removes mmdebstrap's temporary directory. A killed
// mmdebstrap in root mode can leave bind mounts of the host's /dev, /proc
// and /sys inside it: those are detached first, and if any stays, nothing
// is removed.
func removeWork(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	// Deepest first.
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if mounts, err = mountsUnder(dir); err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %s", dir, strings.Join(mounts, ", "))
	}
	return os.RemoveAll(dir)
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) ([]string, error) {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("listing mounts: %w", err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		// Fields: ID, parent ID, major:minor, root, mount point, ...
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMount(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// lineWriter splits mmdebstrap's output into lines, passes each to
// progress and the log, and keeps the last tailLines.
type lineWriter struct {
	progress func(string)
	log      *slog.Logger

	// mu guards the fields below.
	mu   sync.Mutex
	buf  []byte
	last []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(string(bytes.TrimRight(w.buf[:i], "\r")))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) line(l string) {
	if w.progress != nil {
		w.progress(l)
	}
	w.log.Debug("mmdebstrap", "line", l)
	w.last = append(w.last, l)
	if len(w.last) > tailLines {
		w.last = w.last[1:]
	}
}

// tail returns the last lines written, and any unfinished one.
func (w *lineWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := slices.Clone(w.last)
	if len(w.buf) > 0 {
		lines = append(lines, string(w.buf))
	}
	return strings.Join(lines, "\n")
}
