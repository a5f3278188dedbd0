package web

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// logRequests logs every request at Debug once it has been answered.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.log.Debug("http request", "method", r.Method, "path", logPath(r), "query", logQuery(r),
			"remote", r.RemoteAddr, "status", rec.status, "bytes", rec.n, "duration", time.Since(start))
	})
}

// statusWriter records the status and the size of a reply. It keeps the
// underlying writer's io.ReaderFrom, so that http.ServeContent of an
// *os.File still uses sendfile, and offers Unwrap for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.n += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logPath is the request's path for the logs, with the boot token of a
// NoCloud path (/nocloud/{mac}/{token}/...) hidden: logs outlive boots and
// are read by more people than the machines' identities are.
func logPath(r *http.Request) string {
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/nocloud/"); ok {
		if parts := strings.SplitN(rest, "/", 3); len(parts) == 3 {
			return "/nocloud/" + parts[0] + "/-/" + parts[2]
		}
	}
	return p
}

// logQuery is the request's query for the logs, with a token value hidden.
func logQuery(r *http.Request) string {
	if !strings.Contains(r.URL.RawQuery, "token") {
		return r.URL.RawQuery
	}
	q := r.URL.Query()
	if q.Has("token") {
		q.Set("token", "-")
	}
	return q.Encode()
}
