package installer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// imageSize is the test disk image: ~9 MiB, not a multiple of the chunk
// size or of 512.
const imageSize = 9*MiB + 12345

// testImage writes a random image to a file and returns its path, bytes
// and hex sha256.
func testImage(t *testing.T) (string, []byte, string) {
	t.Helper()
	b := make([]byte, imageSize)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, b, hex.EncodeToString(sum[:])
}

// garbageTarget makes a target file of size bytes filled with 0xAA, so
// that zeroing and unwritten regions show.
func garbageTarget(t *testing.T, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "target"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(bytes.Repeat([]byte{0xAA}, int(size))); err != nil {
		t.Fatal(err)
	}
	return f
}

func readAll(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diskServer serves an image file with http.ServeContent (Range, If-Range,
// Content-Range) and can misbehave. It records every request's Range
// header and every report it receives.
type diskServer struct {
	t    *testing.T
	path string
	*httptest.Server

	mu      sync.Mutex
	cuts    []int64  // for request i, abort the body after cuts[i] bytes (-1: no cut)
	ranges  []string // Range header of each disk request
	reports []map[string]string
	noRange bool // ignore Range: answer 200 with the whole image
	badCR   bool // answer a Range with a wrong Content-Range
	corrupt int64
	plan    Plan
}

func newDiskServer(t *testing.T, path string) *diskServer {
	s := &diskServer{t: t, path: path, corrupt: -1}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blobs/disk", s.serveDisk)
	mux.HandleFunc("GET /install/52:54:00:12:34:56", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "good" {
			http.Error(w, "token does not match", http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(s.plan)
	})
	mux.HandleFunc("POST /install/52:54:00:12:34:56/report", func(w http.ResponseWriter, r *http.Request) {
		var m map[string]string
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.reports = append(s.reports, m)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// planFor is the plan of the served image.
func (s *diskServer) planFor(sum string, size int64) Plan {
	return Plan{
		MAC:        "52:54:00:12:34:56",
		Generation: 3,
		Image:      "sha256:" + strings.Repeat("ab", 32),
		DiskURL:    s.URL + "/blobs/disk?mac=52:54:00:12:34:56",
		DiskSHA256: sum,
		DiskSize:   size,
		ReportURL:  s.URL + "/install/52:54:00:12:34:56/report?token=good",
		Seed:       "KILN_IDENTITY_URL='http://kiln/identity'\nKILN_PHONEHOME_URL='http://kiln/ready'",
	}
}

func (s *diskServer) serveDisk(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.ranges)
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	cut := int64(-1)
	if i < len(s.cuts) {
		cut = s.cuts[i]
	}
	noRange, badCR, corrupt := s.noRange, s.badCR, s.corrupt
	s.mu.Unlock()

	data, err := os.ReadFile(s.path)
	if err != nil {
		s.t.Error(err)
		return
	}
	if corrupt >= 0 {
		data[corrupt] ^= 0x01
	}
	var out io.Writer = w
	if cut >= 0 {
		out = &cutWriter{w: w, left: cut}
	}
	switch {
	case noRange:
		w.Header().Set("Content-Length", itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		out.Write(data)
	case badCR && r.Header.Get("Range") != "":
		w.Header().Set("Content-Range", "bytes 0-9/"+itoa(len(data)))
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusPartialContent)
		out.Write(data[:10])
	default:
		http.ServeContent(writerFunc{w, out}, r, "disk.raw", time.Unix(1700000000, 0), bytes.NewReader(data))
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// writerFunc is a ResponseWriter whose body goes to out.
type writerFunc struct {
	http.ResponseWriter
	out io.Writer
}

func (w writerFunc) Write(p []byte) (int, error) { return w.out.Write(p) }

// cutWriter passes left bytes, flushes them to the client, then aborts the
// response: the client sees a body that ends early.
type cutWriter struct {
	w    http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= c.left {
		c.left -= int64(len(p))
		return c.w.Write(p)
	}
	c.w.Write(p[:c.left])
	c.w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

func (s *diskServer) snapshot() (ranges []string, reports []map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...), append([]map[string]string(nil), s.reports...)
}

// fastOpts retries quickly.
func fastOpts() Options {
	return Options{Retries: 3, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Stall: 5 * time.Second}
}
