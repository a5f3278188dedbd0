//go:build linux

// Package e2e boots real VMs from a real kiln: a private network namespace
// with a bridge and a tap device, kiln serve bound to that bridge, and QEMU
// (TCG) with real firmware and real iPXE. Nothing touches a real interface.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Paths the tests need, overridable for unusual machines.
var (
	repoRoot  = mustAbs("..")
	tinyCache = envOr("KILN_TINY_CACHE", filepath.Join(repoRoot, ".cache", "tiny"))
	ovmfCode  = envOr("KILN_OVMF_CODE", "/usr/share/OVMF/OVMF_CODE_4M.fd")
	ovmfVars  = envOr("KILN_OVMF_VARS", "/usr/share/OVMF/OVMF_VARS_4M.fd")
	ipxeDir   = envOr("KILN_IPXE_DIR", "/usr/lib/ipxe")
	kilnBin   string // built once by TestMain
)

const (
	serverCIDR = "10.77.0.1/24"
	serverURL  = "http://10.77.0.1:8080"
)

func TestMain(m *testing.M) {
	// KILN_E2E_BIN runs the tests against a kiln built elsewhere (e.g. from
	// another tree) instead of building ./cmd/kiln.
	if bin := os.Getenv("KILN_E2E_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		kilnBin = abs
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "kiln-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kilnBin = filepath.Join(dir, "kiln")
	build := exec.Command("go", "build", "-o", kilnBin, "./cmd/kiln")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kiln:", err)
		os.Exit(1)
	}
	// kiln serve finds the installer beside itself.
	build = exec.Command("go", "build", "-ldflags", "-s -w", "-o", filepath.Join(dir, "kiln-installer"), "./cmd/kiln-installer")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kiln-installer:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireLab skips when the machine cannot host the lab at all (the only
// reasons to skip), and fails, naming what to install, when a tool is missing.
func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e needs root for network namespaces and tap devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("e2e needs /dev/net/tun:", err)
	}
	for _, tool := range []string{"ip", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (installs iproute2, qemu-system-x86, ipxe, ovmf)", tool)
		}
	}
	for _, f := range []string{filepath.Join(tinyCache, "vmlinuz"), filepath.Join(ipxeDir, "snponly.efi"), ovmfCode} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: run `make deps tiny-inputs`", err)
		}
	}
}

var nsSeq atomic.Int32

// lab is one private network: a namespace holding a bridge with kiln's
// address and one tap device for the VM.
type lab struct {
	t    *testing.T
	ns   string
	dir  string
	kiln *exec.Cmd
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{
		t:   t,
		ns:  fmt.Sprintf("kiln-e2e-%d-%d", os.Getpid(), nsSeq.Add(1)),
		dir: t.TempDir(),
	}
	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(l.destroy) // registered before anything else can fail
	t.Cleanup(l.keepLogsOnFailure)
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", serverCIDR, "dev", "br0"},
		{"link", "set", "br0", "up"},
		{"tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"link", "set", "tap0", "master", "br0"},
		{"link", "set", "tap0", "up"},
	} {
		run(t, "ip", append([]string{"-n", l.ns}, args...)...)
	}
	l.capture("br0", "")
	return l
}

// destroy stops what the lab started, by PID, and deletes the namespace.
func (l *lab) destroy() {
	if l.kiln != nil && l.kiln.Process != nil {
		l.kiln.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { l.kiln.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			l.kiln.Process.Kill()
			<-done
		}
	}
	// Anything else still in the namespace was started by this lab.
	if out, err := exec.Command("ip", "netns", "pids", l.ns).Output(); err == nil {
		for _, pid := range strings.Fields(string(out)) {
			exec.Command("kill", "-9", pid).Run()
		}
	}
	if out, err := exec.Command("ip", "netns", "del", l.ns).CombinedOutput(); err != nil {
		l.t.Errorf("deleting namespace %s: %v: %s", l.ns, err, out)
	}
}

// keepLogsOnFailure copies the lab's logs (kiln, QEMU, serial console) out
// of the test's temporary folder when the test failed, or always when
// KILN_E2E_KEEP_LOGS=1, and says where.
func (l *lab) keepLogsOnFailure() {
	if !l.t.Failed() && os.Getenv("KILN_E2E_KEEP_LOGS") != "1" {
		return
	}
	dst := filepath.Join(envOr("KILN_E2E_ARTIFACTS", os.TempDir()), "kiln-e2e-logs", strings.ReplaceAll(l.t.Name(), "/", "_"))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		l.t.Logf("keeping logs: %v", err)
		return
	}
	// kiln.log, qemu.log, serial.log and the logs of other daemons.
	logs, _ := filepath.Glob(filepath.Join(l.dir, "*.log"))
	for _, path := range logs {
		if b, err := os.ReadFile(path); err == nil {
			os.WriteFile(filepath.Join(dst, filepath.Base(path)), b, 0o644)
		}
	}
	l.t.Logf("logs kept in %s", dst)
}

// inNS returns a command that runs inside the lab's namespace. ip netns exec
// execs the program, so the command's PID is the program's own.
func (l *lab) inNS(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns, name}, args...)...)
}

// startKiln runs kiln serve on the lab's bridge with its log in the lab dir.
func (l *lab) startKiln() {
	l.t.Helper()
	l.startKilnArgs()
}

// startKilnArgs is startKiln with more flags for kiln serve.
func (l *lab) startKilnArgs(extra ...string) {
	l.t.Helper()
	logf, err := os.Create(filepath.Join(l.dir, "kiln.log"))
	if err != nil {
		l.t.Fatal(err)
	}
	args := append([]string{"serve", "--interface", "br0", "--data", filepath.Join(l.dir, "data"),
		"--tftp-root", ipxeDir, "--log-level", "debug"}, extra...)
	l.kiln = l.inNS(context.Background(), kilnBin, args...)
	l.kiln.Stdout, l.kiln.Stderr = logf, logf
	if err := l.kiln.Start(); err != nil {
		l.t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := l.kilnCLI("machines", "list", "--server", serverURL); err == nil {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("kiln serve did not answer within 20s; log:\n%s", tail(filepath.Join(l.dir, "kiln.log"), 40, "http request"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kilnCLI runs the kiln CLI inside the namespace and returns its stdout.
func (l *lab) kilnCLI(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := l.inNS(ctx, kilnBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kiln %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// kilnBuild runs kiln build on the host, outside the lab's namespace: a
// Debian base needs the mirror, which the namespace cannot reach. The build
// only writes into the image store of the lab's kiln.
func (l *lab) kilnBuild(recipe string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := []string{"build", recipe, "--images", filepath.Join(l.dir, "data", "images"), "--json"}
	cmd := exec.CommandContext(ctx, kilnBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kiln %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// machine is the part of the API's machine record the tests check.
type machine struct {
	MAC           string `json:"mac"`
	Hostname      string `json:"hostname"`
	Image         string `json:"image"`
	State         string `json:"state"`
	IP            string `json:"ip"`
	ReportedImage string `json:"reported_image"`
	Reason        string `json:"reason"`
	// The lifecycle: generations, what runs and what is on the disk.
	Generation          int  `json:"generation"`
	ReimagePending      bool `json:"reimage_pending"`
	RunningGeneration   int  `json:"running_generation"`
	InstalledGeneration int  `json:"installed_generation"`
	Audit               []struct {
		Op   string `json:"op"`
		From int    `json:"from_generation"`
		To   int    `json:"to_generation"`
	} `json:"audit"`
	Events []struct {
		Time   time.Time `json:"time"`
		Kind   string    `json:"kind"`
		Detail string    `json:"detail"`
	} `json:"events"`
}

func (l *lab) getMachine(mac string) (machine, error) {
	out, err := l.kilnCLI("machines", "get", "--server", serverURL, mac, "--json")
	if err != nil {
		return machine{}, err
	}
	var m machine
	if err := json.Unmarshal(out, &m); err != nil {
		return machine{}, fmt.Errorf("decoding %s: %w", out, err)
	}
	return m, nil
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tail returns the last n lines of a file that do not contain skip (when
// skip is not empty), for failure messages.
func tail(path string, n int, skip string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if skip != "" && strings.Contains(sc.Text(), skip) {
			continue
		}
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func mustAbs(p string) string {
	_, file, _, _ := runtime.Caller(0)
	abs, err := filepath.Abs(filepath.Join(filepath.Dir(file), p))
	if err != nil {
		panic(err)
	}
	return abs
}
