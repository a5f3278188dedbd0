package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/images"
)

// HTTPError is an error with the status and the message a client may see.
// Err, if set, is the detail; it is logged and never sent.
type HTTPError struct {
	Code int    // HTTP status
	Msg  string // safe to show to the client
	Err  error  // logged only; may be nil
}

// Error implements error.
func (e HTTPError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Unwrap returns the detail error.
func (e HTTPError) Unwrap() error { return e.Err }

// badRequest is a 400 whose message is err's text: only for errors that
// describe the client's input (validation errors of identity and images).
func badRequest(err error) error {
	return HTTPError{Code: http.StatusBadRequest, Msg: err.Error(), Err: err}
}

// handlerFunc is an HTTP handler that returns its failure. It MUST NOT
// write anything before returning a non-nil error.
type handlerFunc func(http.ResponseWriter, *http.Request) error

// adapt turns h into an http.Handler: a non-nil error becomes a JSON
// {"error": msg} reply with the status of asError, and is logged.
func (s *Server) adapt(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		he := asError(err)
		log := s.log.With("method", r.Method, "path", logPath(r), "status", he.Code)
		// Client errors are the client's news (boot decisions log their own
		// Info line); server errors are the operator's.
		if he.Code >= 500 {
			log.Error("request failed", "err", err)
		} else {
			log.Debug("request refused", "err", err)
		}
		// A map of strings always encodes.
		_ = writeJSON(w, he.Code, map[string]string{"error": he.Msg})
	})
}

// asError maps err to a status and a safe message. A body over the limit is
// a 413 wherever it was found; an HTTPError says its own status; the sentinel
// errors of fleet and images carry messages written for operators, so their
// text is shown; any other error is a 500 with a generic message.
func asError(err error) HTTPError {
	var he HTTPError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return HTTPError{Code: http.StatusRequestEntityTooLarge, Msg: "request body is larger than " + sizeLimit(tooBig.Limit), Err: err}
	case errors.As(err, &he):
		return he
	case errors.Is(err, fleet.ErrForbidden):
		return HTTPError{Code: http.StatusForbidden, Msg: err.Error(), Err: err}
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, images.ErrInvalidManifest):
		return HTTPError{Code: http.StatusBadRequest, Msg: err.Error(), Err: err}
	case errors.Is(err, fleet.ErrNotFound), errors.Is(err, images.ErrNotFound):
		return HTTPError{Code: http.StatusNotFound, Msg: err.Error(), Err: err}
	case errors.Is(err, fleet.ErrExists), errors.Is(err, fleet.ErrTransition), errors.Is(err, images.ErrMissingBlob):
		return HTTPError{Code: http.StatusConflict, Msg: err.Error(), Err: err}
	}
	return HTTPError{Code: http.StatusInternalServerError, Msg: "internal server error", Err: err}
}

// macVar returns the {mac} path variable in canonical form.
func macVar(r *http.Request) (string, error) {
	mac, err := identity.NormalizeMAC(mux.Vars(r)["mac"])
	if err != nil {
		return "", badRequest(err)
	}
	return mac, nil
}

// writeJSON encodes v into a buffer, then writes it with status code.
func writeJSON(w http.ResponseWriter, code int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return HTTPError{Code: http.StatusInternalServerError, Msg: "encoding reply", Err: err}
	}
	writeBody(w, code, "application/json", buf.Bytes())
	return nil
}

// writeBody writes a complete reply. A write error means the client went
// away; there is nobody left to tell, so it is dropped.
func writeBody(w http.ResponseWriter, code int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
