package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

// phoneHomeBody is what a booted machine reports. Inputs is the digest of
// the inputs its image was built from (/etc/kiln/image); Image an image ID.
// Either is enough; Inputs wins when both are given.
type phoneHomeBody struct {
	Inputs string `json:"inputs"`
	Image  string `json:"image"`
}

// phoneHome serves POST /phone-home/{mac}?token=T, T being the token of
// the machine's boot in progress (a 403 otherwise). The body is JSON
// (Content-Type: application/json) or a form (urlencoded body or query), so
// that busybox wget can send it. The reply is the machine record.
func (s *Server) phoneHome(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	if err := s.authorizePhoneHome(r, mac); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	body, err := decodePhoneHome(r)
	if err != nil {
		return err
	}
	reported, err := s.reportedImage(body)
	if err != nil {
		return err
	}
	log := s.log.With("mac", mac, "image", reported)
	m, err := s.fleet.Report(mac, reported)
	if err != nil {
		log.Info("phone-home refused", "err", err)
		return err
	}
	log.Info("phone-home", "state", m.State, "assigned", m.Image, "reason", m.Reason)
	return writeJSON(w, http.StatusOK, m)
}

func decodePhoneHome(r *http.Request) (phoneHomeBody, error) {
	var b phoneHomeBody
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/json" {
		// Lenient on purpose: images may report more fields later.
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			return b, HTTPError{Code: http.StatusBadRequest, Msg: "body is not a JSON object with inputs or image", Err: err}
		}
		return b, nil
	}
	if err := r.ParseForm(); err != nil {
		return b, HTTPError{Code: http.StatusBadRequest, Msg: "body is not a form with inputs or image", Err: err}
	}
	return phoneHomeBody{Inputs: r.FormValue("inputs"), Image: r.FormValue("image")}, nil
}

// reportedImage resolves what a machine reported to an image ID. Inputs
// that match no published image are reported as such, so that the machine
// fails with a reason instead of the request failing.
func (s *Server) reportedImage(b phoneHomeBody) (string, error) {
	switch {
	case b.Inputs != "":
		inputs, err := images.ParseDigest(b.Inputs)
		if err != nil {
			return "", badRequest(fmt.Errorf("inputs: %w", err))
		}
		img, err := s.images.FindByInputs(inputs)
		if errors.Is(err, images.ErrNotFound) {
			return fmt.Sprintf("unknown image (inputs %s)", inputs), nil
		}
		if err != nil {
			return "", err
		}
		return string(img.ID), nil
	case b.Image != "":
		id, err := images.ParseDigest(b.Image)
		if err != nil {
			return "", badRequest(fmt.Errorf("image: %w", err))
		}
		return string(id), nil
	}
	return "", HTTPError{Code: http.StatusBadRequest, Msg: "phone-home needs inputs (sha256:<hex>) or image (an image ID)"}
}

// authorizePhoneHome is authorize, except that the boot of a UKI served as
// stored (one without room for its token, see the BUG note in token.go) may
// phone home without one: the phone-home ends the boot, so it happens once.
func (s *Server) authorizePhoneHome(r *http.Request, mac string) error {
	if bootToken(r) == "" {
		m, err := s.fleet.Get(mac)
		if err == nil && m.Boot != nil && m.Boot.Kind == fleet.BootUKI {
			return nil
		}
	}
	_, err := s.authorize(r, mac)
	return err
}
