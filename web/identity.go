package web

import (
	"fmt"
	"net/http"

	"github.com/kiln-dev/kiln/fleet"
)

// BUG(kiln): GET /identity/{mac} is not token-protected yet: anyone who can
// reach kiln can read any machine's identity by its MAC. Per-boot tokens on
// the kernel command line come in a later issue.

// serveIdentity serves GET /identity/{mac}: the machine's identity as kiln
// JSON, or with ?format=env as shell assignments.
func (s *Server) serveIdentity(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	m, err := s.fleet.Get(mac)
	if err != nil {
		return err
	}
	id := m.Identity()
	format := r.URL.Query().Get("format")
	var body []byte
	contentType := "text/plain; charset=utf-8"
	switch format {
	case "", "json":
		format = "json"
		contentType = "application/json"
		if body, err = id.JSON(); err != nil {
			return fmt.Errorf("encoding identity of %s: %w", mac, err)
		}
		body = append(body, '\n')
	case "env":
		body = id.Env()
	default:
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("format %q: want json or env", format)}
	}
	if _, err := s.fleet.Observe(mac, fleet.EventIdentity, format); err != nil {
		return err
	}
	s.log.Info("identity served", "mac", mac, "image", m.Image, "format", format)
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, contentType, body)
	return nil
}
