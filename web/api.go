package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/images"
)

// machineList is the reply of GET /api/v1/machines.
type machineList struct {
	Machines []fleet.Machine `json:"machines"`
}

// imageJSON is one image as the API shows it: the listing entry with the
// manifest's fields flattened.
type imageJSON struct {
	ID        images.Digest     `json:"id"`
	Name      string            `json:"name"`
	Created   time.Time         `json:"created"`
	Size      int64             `json:"size"`
	Inputs    images.Digest     `json:"inputs"`
	Cmdline   string            `json:"cmdline"`
	Artifacts []images.Artifact `json:"artifacts"`
}

// imageList is the reply of GET /api/v1/images.
type imageList struct {
	Images []imageJSON `json:"images"`
}

func toImageJSON(img images.Image) imageJSON {
	return imageJSON{
		ID: img.ID, Name: img.Manifest.Name, Created: img.Created, Size: img.Size,
		Inputs: img.Manifest.Inputs, Cmdline: img.Manifest.Cmdline, Artifacts: img.Manifest.Artifacts,
	}
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.fleet.List()
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []fleet.Machine{}
	}
	return writeJSON(w, http.StatusOK, machineList{Machines: ms})
}

// createMachine serves POST /api/v1/machines with a body of exactly one
// JSON object: {"mac", "hostname", "image"} and optionally "mode"
// (stateless or install) and "identity" (the rest of the minimal identity:
// domain, addresses, gateway, dns, ssh keys, labels, macs). The machine
// starts at generation 1.
func (s *Server) createMachine(w http.ResponseWriter, r *http.Request) error {
	nm, err := s.decodeNewMachine(w, r)
	if err != nil {
		return err
	}
	m, err := s.fleet.Create(nm, actor(r))
	if err != nil {
		return err
	}
	s.log.Info("machine registered", "mac", m.MAC, "hostname", m.Hostname, "image", m.Image, "mode", m.Mode, "actor", actor(r))
	w.Header().Set("Location", "/api/v1/machines/"+m.MAC)
	return writeJSON(w, http.StatusCreated, m)
}

// replaceMachine serves PUT /api/v1/machines/{mac}: the body of a create,
// which becomes the machine's next generation. Nothing reaches the running
// machine: its next boot boots the new generation ("re-image pending").
func (s *Server) replaceMachine(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	nm, err := s.decodeNewMachine(w, r)
	if err != nil {
		return err
	}
	if nm.MAC == "" {
		nm.MAC = mac
	}
	if got, err := identity.NormalizeMAC(nm.MAC); err != nil || got != mac {
		return badRequest(fmt.Errorf("body mac %q is not the machine %s of the path: a MAC is never changed, create a machine instead", nm.MAC, mac))
	}
	m, err := s.fleet.Replace(mac, nm, actor(r))
	if err != nil {
		return err
	}
	s.log.Info("machine replaced", "mac", m.MAC, "generation", m.Generation, "image", m.Image, "actor", actor(r))
	return writeJSON(w, http.StatusOK, m)
}

// machineOp serves POST /api/v1/machines/{mac}/{reimage,rollback,retire},
// with an empty body.
func (s *Server) machineOp(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	op := mux.Vars(r)["op"]
	var m fleet.Machine
	switch op {
	case "reimage":
		m, err = s.fleet.Reimage(mac, actor(r))
	case "rollback":
		m, err = s.fleet.Rollback(mac, actor(r))
	case "retire":
		m, err = s.fleet.Retire(mac, actor(r))
	default:
		return HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no machine operation %q", op)}
	}
	if err != nil {
		return err
	}
	s.log.Info("machine "+op, "mac", m.MAC, "generation", m.Generation, "image", m.Image, "state", m.State, "actor", actor(r))
	return writeJSON(w, http.StatusOK, m)
}

// noPatch answers PATCH of a machine: machines are never edited in place.
func noPatch(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Allow", "GET, PUT, DELETE")
	return HTTPError{Code: http.StatusMethodNotAllowed, Msg: "machines are never patched: PUT the whole machine to make a new generation, or POST .../reimage, .../rollback or .../retire"}
}

func (s *Server) decodeNewMachine(w http.ResponseWriter, r *http.Request) (fleet.NewMachine, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var nm fleet.NewMachine
	if err := decodeStrict(r.Body, &nm); err != nil {
		return nm, err
	}
	// An empty image is fleet's to refuse, after the MAC and the hostname.
	if nm.Image != "" {
		if err := s.checkImage(nm.Image); err != nil {
			return nm, err
		}
	}
	return nm, nil
}

// actor names who made an API change, for the audit trail: the
// X-Kiln-Actor header (kiln's CLI sends user@host), else the peer address.
func actor(r *http.Request) string {
	if a := strings.TrimSpace(r.Header.Get("X-Kiln-Actor")); a != "" && len(a) <= 128 {
		return printable(a)
	}
	return "remote " + r.RemoteAddr
}

// checkImage refuses an image ID that is not in the image store.
func (s *Server) checkImage(id string) error {
	d, err := images.ParseDigest(id)
	if err != nil {
		return badRequest(fmt.Errorf("image: %w", err))
	}
	if _, err := s.images.Get(d); errors.Is(err, images.ErrNotFound) {
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("image %s is not in the image store", d), Err: err}
	} else if err != nil {
		return err
	}
	return nil
}

// decodeStrict decodes exactly one JSON object with only known fields into
// v. Its errors name what is wrong with the body.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return HTTPError{Code: http.StatusBadRequest, Msg: "body must hold a single JSON object, and has more after it", Err: err}
	}
	return nil
}

// jsonError turns a decoding error into a 400 that says what is wrong.
func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	msg := "body is not valid JSON: " + err.Error()
	switch {
	case errors.Is(err, fleet.ErrInvalid):
		// A well-formed body that fleet refused (e.g. an identity with a
		// field that belongs in the image): its message says why.
		msg = err.Error()
	case errors.Is(err, io.EOF):
		msg = "body is empty: want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "body is not valid JSON: it ends in the middle of a value"
	case errors.As(err, &syntax):
		msg = fmt.Sprintf("body is not valid JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ) && typ.Field == "":
		msg = fmt.Sprintf("body must be a JSON object, not a %s", typ.Value)
	case errors.As(err, &typ):
		msg = fmt.Sprintf("field %q must be a %s, not a %s", typ.Field, typ.Type, typ.Value)
	default:
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			msg = "unknown field " + field
		}
	}
	return HTTPError{Code: http.StatusBadRequest, Msg: msg, Err: err}
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	m, err := s.fleet.Get(mac)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, machineJSON{Machine: m, Timeline: m.Timeline()})
}

// machineJSON is the reply of GET /api/v1/machines/{mac}: the machine
// record with the timeline of its latest boot.
type machineJSON struct {
	fleet.Machine
	Timeline fleet.Timeline `json:"timeline"`
}

// getTimeline serves GET /api/v1/machines/{mac}/timeline: the timeline of
// the machine's latest boot.
func (s *Server) getTimeline(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	m, err := s.fleet.Get(mac)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, m.Timeline())
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	if err := s.fleet.Delete(mac); err != nil {
		return err
	}
	s.log.Info("machine deleted", "mac", mac)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.images.List()
	if err != nil {
		return err
	}
	out := imageList{Images: make([]imageJSON, 0, len(imgs))}
	for _, img := range imgs {
		out.Images = append(out.Images, toImageJSON(img))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) error {
	id, err := images.ParseDigest(mux.Vars(r)["id"])
	if err != nil {
		return badRequest(err)
	}
	img, err := s.images.Stat(id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toImageJSON(img))
}
