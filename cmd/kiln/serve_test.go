package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestMain lets the test binary act as the kiln command when
// KILN_TEST_MAIN=1, so CLI tests run the real main in a real process.
func TestMain(m *testing.M) {
	if os.Getenv("KILN_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// startServe runs "kiln serve" without --interface: HTTP on loopback only.
// It returns the server's URL and a buffer of its stderr.
func startServe(t *testing.T, dataDir string) (string, *testenv.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--data", dataDir, "--http-port", "0")
	cmd.Env = append(os.Environ(), "KILN_TEST_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testenv.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case u := <-urls:
		return u, stderr
	case <-time.After(15 * time.Second):
		t.Fatalf("kiln serve printed no URL; stderr:\n%s", stderr.String())
	}
	return "", nil
}

// TestServeWithoutInterface checks that kiln serve refuses DHCP without
// --interface, says why, and still serves the API on loopback, and that the
// machines CLI talks to it end to end.
func TestServeWithoutInterface(t *testing.T) {
	data := t.TempDir()
	url, stderr := startServe(t, data)
	// stderr is copied by a goroutine of os/exec: give it a moment.
	why := "DHCP and TFTP not started: no --interface given"
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), why) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), why) {
		t.Errorf("stderr does not say why DHCP is off:\n%s", stderr.String())
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz = %v, %v", resp, err)
	}
	resp.Body.Close()

	// Publish an image straight into the running server's store.
	img := publishTestImage(t, filepath.Join(data, "images"))

	var out, errb bytes.Buffer
	code := run([]string{"machines", "add", "--server", url, "--mac", "52-54-00-00-00-AA", "--hostname", "cli-1", "--image", img, "--json"}, &out, &errb)
	if code != exitOK {
		t.Fatalf("machines add = %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"machines", "get", "--server", url, "52:54:00:00:00:aa", "--json"}, &out, &errb); code != exitOK {
		t.Fatalf("machines get = %d: %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("machines get --json printed %q: %v", out.String(), err)
	}
	for k, want := range map[string]string{"mac": "52:54:00:00:00:aa", "hostname": "cli-1", "image": img, "state": "assigned"} {
		if m[k] != want {
			t.Errorf("machines get --json: %s = %v, want %q", k, m[k], want)
		}
	}
	if _, ok := m["events"]; !ok {
		t.Errorf("machines get --json dropped fields of the API record: %v", m)
	}

	// Bad input is exit code 2 with the server's reason.
	errb.Reset()
	code = run([]string{"machines", "add", "--server", url, "--mac", "52:54:00:00:00:ab", "--hostname", "cli-1", "--image", img}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "hostname") {
		t.Errorf("duplicate hostname: exit %d, stderr %q; want %d naming the hostname", code, errb.String(), exitUsage)
	}
	errb.Reset()
	code = run([]string{"machines", "get", "--server", url, "52:54:00:00:00:ff"}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "404") {
		t.Errorf("unknown machine: exit %d, stderr %q; want %d with 404", code, errb.String(), exitUsage)
	}
	if code := run([]string{"machines", "rm", "--server", url, "52:54:00:00:00:aa"}, &out, &errb); code != exitOK {
		t.Errorf("machines rm = %d: %s", code, errb.String())
	}
}

// TestServeRefusesUnknownInterface checks that a named interface that does
// not exist is a usage error naming it, before anything binds.
func TestServeRefusesUnknownInterface(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"serve", "--interface", "kiln-nope0", "--data", t.TempDir(), "--http-port", "0"}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "kiln-nope0") {
		t.Fatalf("serve --interface kiln-nope0 = %d, %q; want %d naming it", code, errb.String(), exitUsage)
	}
}

// publishTestImage publishes a small two-artifact image into the store at
// dir and returns its ID.
func publishTestImage(t *testing.T, dir string) string {
	t.Helper()
	return publishNamedImage(t, dir, "cli-test")
}
