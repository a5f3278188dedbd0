package metrics

import (
	"io"
	"net/http"
	"strconv"
	"time"
)

// Instrument returns middleware that counts and times every request into
// kiln_http_requests_total{route,method,code} and
// kiln_http_request_seconds{route}. route names the route that serves a
// request: it MUST return a template such as "/boot/{mac}.ipxe" (or a
// fixed name such as "unmatched"), never the raw path, so that the label
// has a handful of values. Past 64 distinct routes, new ones count as
// "other". The time runs until the handler returns, body included.
//
// The middleware keeps the writer's io.ReaderFrom, so http.ServeContent
// still uses sendfile, and offers Unwrap for http.ResponseController.
func (m *Metrics) Instrument(route func(*http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if m == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			name := m.routes.label(route(r))
			rec := &codeWriter{ResponseWriter: w, code: http.StatusOK}
			next.ServeHTTP(rec, r)
			m.httpRequests.WithLabelValues(name, httpMethods.label(r.Method), codeLabel(rec.code)).Inc()
			m.httpSeconds.WithLabelValues(name).Observe(seconds(time.Since(start)))
		})
	}
}

// codeLabel returns the label of an HTTP status: its three digits, or
// "other" for a code outside 100-599.
func codeLabel(code int) string {
	if code < 100 || code > 599 {
		return OtherLabel
	}
	return strconv.Itoa(code)
}

// codeWriter records the status of a reply.
type codeWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *codeWriter) WriteHeader(code int) {
	// 1xx are informational; the final status follows.
	if !w.wrote && code >= 200 {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *codeWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
