package web

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/store"
)

// The fake image every test environment publishes.
var (
	testKernel  = []byte("kernel:0123456789abcdefghijklmnopqrstuvwxyz")
	testInitrd  = []byte("initrd:ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	testInputs  = images.DigestOf([]byte("inputs"))
	testCmdline = "console=ttyS0 quiet"
)

const (
	testMAC      = "52:54:00:12:34:56"
	testHostname = "node-1"
)

// env is a kiln web server on a real socket over a real bbolt fleet and a
// real image store holding one fake image.
type env struct {
	t      testing.TB
	srv    *httptest.Server
	fleet  *fleet.Fleet
	images *images.Store
	image  images.Digest // ID of the fake image
	man    images.Manifest
	client *http.Client // does not follow redirects
	clock  *testClock   // the fleet's clock: real time, moved on by advance
}

type envOption func(*Config)

func withBaseURL(u string) envOption { return func(c *Config) { c.BaseURL = u } }

// testClock is the real clock plus an offset the test can grow.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// advance moves the fleet's clock forward by d.
func (e *env) advance(d time.Duration) {
	e.clock.mu.Lock()
	e.clock.offset += d
	e.clock.mu.Unlock()
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var log *slog.Logger
	if _, fuzzing := t.(*testing.F); !fuzzing {
		log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	clock := &testClock{}
	fl, err := fleet.New(fleet.Config{Store: st, Log: log, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := images.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, fleet: fl, images: imgs, clock: clock}
	e.man = images.Manifest{
		SchemaVersion: 1, Name: "test-image", Inputs: testInputs, Cmdline: testCmdline,
		Artifacts: []images.Artifact{e.putBlob("kernel", testKernel), e.putBlob("initrd", testInitrd)},
	}
	e.image = e.publish(e.man)

	cfg := Config{Fleet: fl, Images: imgs, Log: log}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	e.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return e
}

// withT returns a copy of e that reports to t, for use inside a fuzz
// target, where the *testing.F must not be called.
func (e *env) withT(t testing.TB) *env {
	c := *e
	c.t = t
	return &c
}

func (e *env) putBlob(name string, b []byte) images.Artifact {
	e.t.Helper()
	a, err := e.images.PutBlob(bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	a.Name = name
	return a
}

func (e *env) publish(m images.Manifest) images.Digest {
	e.t.Helper()
	id, err := e.images.Publish(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// addMachine registers a machine directly in the fleet.
func (e *env) addMachine(mac, hostname string, image images.Digest) fleet.Machine {
	e.t.Helper()
	m, err := e.fleet.Add(fleet.NewMachine{MAC: mac, Hostname: hostname, Image: string(image)})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *env) machine(mac string) fleet.Machine {
	e.t.Helper()
	m, err := e.fleet.Get(mac)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// do sends a request (path is sent as written, not cleaned) and returns the
// response and its whole body.
func (e *env) do(method, path string, header http.Header, body string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.URL.Opaque = path // keeps dots and escapes exactly as given
	if i := strings.IndexByte(path, '?'); i >= 0 {
		req.URL.Opaque, req.URL.RawQuery = path[:i], path[i+1:]
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

func (e *env) get(path string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(http.MethodGet, path, nil, "")
}

// wantStatus fails the test unless resp has status want.
func wantStatus(t testing.TB, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body: %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, want, body)
	}
}

// errorMessage returns the "error" of a JSON error reply.
func errorMessage(t testing.TB, body []byte) string {
	t.Helper()
	var v struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return v.Error
}

func hasEvent(m fleet.Machine, kind fleet.EventKind) bool {
	for _, ev := range m.Events {
		if ev.Kind == kind {
			return true
		}
	}
	return false
}

func TestNewConfig(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Fleet: e.fleet, Images: e.images}, true},
		{"base URL", Config{Fleet: e.fleet, Images: e.images, BaseURL: "http://10.77.0.1:8080/"}, true},
		{"no fleet", Config{Images: e.images}, false},
		{"no images", Config{Fleet: e.fleet}, false},
		{"base URL without scheme", Config{Fleet: e.fleet, Images: e.images, BaseURL: "10.77.0.1:8080"}, false},
		{"base URL with query", Config{Fleet: e.fleet, Images: e.images, BaseURL: "http://10.77.0.1/?x=1"}, false},
		{"base URL with space", Config{Fleet: e.fleet, Images: e.images, BaseURL: "http://10.77.0.1/a b"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Errorf("New(%+v) = %v, want ok=%v", tc.cfg, err, tc.ok)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	resp, body := e.get("/healthz")
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "ok\n" {
		t.Errorf("GET /healthz = %q, want %q", body, "ok\n")
	}
}

func TestNotFoundIsJSON(t *testing.T) {
	e := newEnv(t)
	resp, body := e.get("/nope")
	wantStatus(t, resp, body, http.StatusNotFound)
	if msg := errorMessage(t, body); !strings.Contains(msg, "/nope") {
		t.Errorf("404 message %q does not name the path", msg)
	}
}

// The logging wrapper must keep io.ReaderFrom, or ServeContent of a blob
// loses sendfile.
var _ io.ReaderFrom = (*statusWriter)(nil)
