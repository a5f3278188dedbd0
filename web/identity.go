package web

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/kiln-dev/kiln/fleet"
)

// serveIdentity serves GET /identity/{mac}?token=T: the machine's identity
// as kiln JSON, or with ?format=env as shell assignments. T is the token of
// the machine's boot in progress; anything else is a 403.
func (s *Server) serveIdentity(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "env" {
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("format %q: want json or env", format)}
	}
	m, err := s.authorize(r, mac)
	if err != nil {
		return err
	}
	id := m.Identity()
	var body []byte
	contentType := "text/plain; charset=utf-8"
	if format == "env" {
		body = id.Env()
	} else {
		format = "json"
		contentType = "application/json"
		if body, err = id.JSON(); err != nil {
			return fmt.Errorf("encoding identity of %s: %w", mac, err)
		}
		body = append(body, '\n')
	}
	if _, err := s.fleet.Observe(mac, fleet.EventIdentity, format); err != nil {
		return err
	}
	s.log.Info("identity served", "mac", mac, "image", m.Image, "generation", m.Generation, "format", format)
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, contentType, body)
	return nil
}

// serveNoCloud serves GET /nocloud/{mac}/{token}/{file}: the machine's
// identity as cloud-init's NoCloud seed files (meta-data, user-data,
// network-config and an empty vendor-data). The token is in the path
// because cloud-init appends the file names to the seed URL
// (ds=nocloud-net;s=<url>/).
func (s *Server) serveNoCloud(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	file := mux.Vars(r)["file"]
	switch file {
	case "meta-data", "user-data", "vendor-data", "network-config":
	default:
		return HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no NoCloud file %q: want meta-data, user-data, vendor-data or network-config", file)}
	}
	m, err := s.authorizeToken(r, mac, mux.Vars(r)["token"])
	if err != nil {
		return err
	}
	id := m.Identity()
	var body []byte
	switch file {
	case "meta-data":
		body, err = id.MetaData()
	case "user-data":
		body, err = id.UserData()
	case "network-config":
		body, err = id.NetworkConfig()
	case "vendor-data":
		// Must exist: cloud-init 22.4 retries a 404 for ~10 s.
		body = []byte{}
	}
	if err != nil {
		return fmt.Errorf("rendering %s of %s: %w", file, mac, err)
	}
	if file == "user-data" {
		if _, err := s.fleet.Observe(mac, fleet.EventIdentity, "nocloud"); err != nil && !errors.Is(err, fleet.ErrTransition) {
			return err
		}
	}
	s.log.Info("nocloud served", "mac", mac, "file", file, "generation", m.Generation)
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", body)
	return nil
}
