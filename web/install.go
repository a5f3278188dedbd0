package web

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/installer"
)

// installerInitramfs serves GET and HEAD /install/initramfs.cpio: the
// installer's initramfs, built once when the server starts.
func (s *Server) installerInitramfs(w http.ResponseWriter, r *http.Request) error {
	if s.installer == nil {
		return HTTPError{Code: http.StatusNotFound, Msg: "this kiln serve has no installer: start it with --installer PATH (kiln-installer, built by make)"}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, "application/octet-stream", s.installer)
	return nil
}

// servePlan serves GET /install/{mac}?token=T to the installer of an
// install boot: an installer.Plan, the installer's contract. Every plan
// mints the disk credential of the generation, which the seed carries: the
// installed system proves itself with it when it phones home from its disk.
func (s *Server) servePlan(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	token := bootToken(r)
	m, err := s.authorizeToken(r, mac, token)
	if err != nil {
		return err
	}
	if m.Boot == nil || m.Boot.Kind != fleet.BootInstall {
		return HTTPError{Code: http.StatusConflict, Msg: fmt.Sprintf("machine %s is not in an install boot", mac)}
	}
	man, err := s.manifest(m.Image)
	if err != nil {
		return err
	}
	disk, ok := man.Artifact("disk")
	if !ok {
		return HTTPError{Code: http.StatusConflict, Msg: fmt.Sprintf("image %s has no disk output", m.Image)}
	}
	base, err := s.baseURL(r)
	if err != nil {
		return err
	}
	diskToken, err := s.fleet.IssueDiskToken(mac, token)
	if err != nil {
		return err
	}
	q := "?token=" + url.QueryEscape(diskToken)
	seed := shellAssignments([][2]string{
		{"KILN_SERVER", base},
		{"KILN_MAC", mac},
		{"KILN_GENERATION", strconv.Itoa(m.Generation)},
		{"KILN_IMAGE", m.Image},
		{"KILN_IDENTITY_URL", base + "/identity/" + mac + q},
		{"KILN_PHONEHOME_URL", base + "/phone-home/" + mac + q},
	})
	plan := installer.Plan{
		MAC: mac, Generation: m.Generation, Image: m.Image,
		DiskURL:    blobURL(base, disk.Digest, mac),
		DiskSHA256: digestHex(disk.Digest),
		DiskSize:   disk.Size,
		ReportURL:  base + "/install/" + mac + "/report?token=" + url.QueryEscape(token),
		Seed:       seed,
	}
	s.log.Info("install plan served", "mac", mac, "image", m.Image, "generation", m.Generation, "disk_size", disk.Size)
	return writeJSON(w, http.StatusOK, plan)
}

// maxReason bounds the reason of a failed install that kiln keeps.
const maxReason = 1024

// installReport is the body of POST /install/{mac}/report.
type installReport struct {
	State  string `json:"state"` // installed or failed
	Reason string `json:"reason"`
}

// serveInstallReport serves POST /install/{mac}/report?token=T: the
// installer's outcome. installed makes the verified generation the disk's, so the next
// PXE boot of the machine boots its disk; failed keeps the disk unbootable
// for kiln (it never hands a machine to a disk it did not see verified).
func (s *Server) serveInstallReport(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	if _, err := s.authorize(r, mac); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var rep installReport
	if err := decodeStrict(r.Body, &rep); err != nil {
		return err
	}
	var ok bool
	switch rep.State {
	case "installed":
		ok = true
	case "failed":
		if strings.TrimSpace(rep.Reason) == "" {
			return badRequest(errors.New(`state "failed" needs a reason`))
		}
	default:
		return badRequest(fmt.Errorf("state %q: want installed or failed", rep.State))
	}
	reason := printable(rep.Reason)
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason], "") + "…"
	}
	m, err := s.fleet.ReportInstall(mac, ok, reason)
	if err != nil {
		return err
	}
	s.log.Info("install report", "mac", mac, "state", m.State, "generation", m.Generation, "reason", m.Reason)
	return writeJSON(w, http.StatusOK, m)
}

// digestHex returns the hex part of a sha256 digest.
func digestHex(d images.Digest) string {
	h := strings.TrimPrefix(string(d), "sha256:")
	if _, err := hex.DecodeString(h); err != nil {
		return ""
	}
	return h
}

// shellAssignments renders NAME='value' lines that a busybox sh can source.
func shellAssignments(kvs [][2]string) string {
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s='%s'\n", kv[0], strings.ReplaceAll(kv[1], "'", `'\''`))
	}
	return b.String()
}
