package web

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

// httpBoot serves GET and HEAD /httpboot/{mac}.efi, the URL that DHCP hands
// to UEFI HTTP Boot clients. A machine whose image has a UKI boots it
// directly: kernel, initrd and command line in one EFI binary, no iPXE and
// no TFTP. Any other known machine gets the EFI iPXE binary of
// Config.HTTPBootFile, which then fetches its boot script. OVMF sends
// HEAD before GET; only GET records events: firsthop, script, kernel and
// initrd for a UKI (it is all of them), firsthop for iPXE (whose script
// request records the script).
func (s *Server) httpBoot(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	log := s.log.With("mac", mac)
	m, err := s.fleet.Get(mac)
	if errors.Is(err, fleet.ErrNotFound) {
		log.Info("http boot: unknown machine, not booting")
		return HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("unknown machine %s: register it with kiln machines add", mac)}
	}
	if err != nil {
		return err
	}
	log = log.With("hostname", m.Hostname, "image", m.Image)
	man, err := s.manifest(m.Image)
	if errors.Is(err, images.ErrNotFound) {
		log.Error("http boot: assigned image is not in the image store, not booting")
		return HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("image %s of %s is not in the image store", printable(m.Image), m.Hostname)}
	}
	if err != nil {
		return err
	}
	var f *os.File
	what := "uki"
	var before, after []fleet.Observation
	uki, hasUKI := man.Artifact("uki")
	// An install-mode machine gets iPXE, whose script decides between the
	// installer and the disk.
	if hasUKI && m.Mode != fleet.Install {
		if f, err = s.images.OpenBlob(uki.Digest); err != nil {
			return err
		}
		// The UKI is the first hop, the boot script (its command line),
		// the kernel and the initrd at once.
		before = []fleet.Observation{{Kind: fleet.EventFirstHop, Detail: "httpboot uki"}}
		after = []fleet.Observation{
			{Kind: fleet.EventKernel, Detail: string(uki.Digest)},
			{Kind: fleet.EventInitrd, Detail: string(uki.Digest)},
		}
	} else {
		if s.httpBootFile == "" {
			log.Info("http boot: image has no uki and no EFI iPXE is configured")
			return HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("image %s has no uki output and no EFI iPXE binary is configured for HTTP Boot", m.Image)}
		}
		if f, err = os.Open(s.httpBootFile); err != nil {
			return fmt.Errorf("opening the HTTP Boot iPXE binary: %w", err)
		}
		what = "ipxe"
		// iPXE fetches the boot script next, which starts the boot.
		before = []fleet.Observation{{Kind: fleet.EventFirstHop, Detail: "httpboot " + filepath.Base(s.httpBootFile)}}
	}
	defer f.Close()
	var content io.ReadSeeker = f
	if what == "uki" {
		content, err = s.ukiForBoot(w, r, log, f, m, uki.Digest, before, after)
		if err != nil {
			return err
		}
	} else if r.Method == http.MethodGet {
		if _, err := s.fleet.ObserveAll(mac, before...); err != nil {
			return err
		}
	}
	log.Info("http boot served", "method", r.Method, "file", what)
	w.Header().Set("Content-Type", "application/efi")
	http.ServeContent(w, r, "", time.Time{}, content)
	return nil
}

// ukiForBoot returns what to serve of the UKI f of machine m: for a GET,
// it starts the boot (recording before, the boot's start, then after) and
// returns the UKI with kiln's parameters and the boot's token appended to
// its command line (ukiWithCmdline); a HEAD gets the UKI as stored, of the
// same size. A UKI without room for them (built by an older kiln) is served
// as stored, and its boot may fetch its identity once without a token (see
// the BUG note in token.go).
func (s *Server) ukiForBoot(w http.ResponseWriter, r *http.Request, log *slog.Logger, f *os.File, m fleet.Machine, digest images.Digest, before, after []fleet.Observation) (io.ReadSeeker, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	base, err := s.baseURL(r)
	if err != nil {
		return nil, err
	}
	// A placeholder of a token's length tells, before the boot starts,
	// whether the token will fit.
	probe, err := kilnArgs(base, m, strings.Repeat("x", fleet.TokenLen))
	if err != nil {
		return nil, err
	}
	_, perr := ukiWithCmdline(f, fi.Size(), probe)
	if perr != nil {
		log.Warn("http boot: the UKI cannot carry the boot's token: it may fetch its identity once without one; rebuild it with this kiln", "err", perr)
		w.Header().Set("ETag", `"`+string(digest)+`"`)
	} else {
		// Every boot's bytes differ: never cached.
		w.Header().Set("Cache-Control", "no-store")
	}
	if r.Method != http.MethodGet {
		return f, nil
	}
	if _, err := s.fleet.ObserveAll(m.MAC, before...); err != nil {
		return nil, err
	}
	firmware := fleet.BootNetwork
	if perr != nil {
		firmware = fleet.BootUKI
	}
	plan, err := s.fleet.StartBoot(m.MAC, firmware)
	if err != nil {
		return nil, err
	}
	switch {
	case plan.Kind == fleet.BootNothing:
		log.Info("http boot: machine boots nothing", "state", plan.Machine.State)
		return nil, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("machine %s is %s: it boots nothing", m.MAC, plan.Machine.State)}
	case plan.Kind != firmware:
		// The machine was switched to install mode meanwhile.
		return nil, HTTPError{Code: http.StatusConflict, Msg: fmt.Sprintf("machine %s now boots %s: retry", m.MAC, plan.Kind)}
	}
	var content io.ReadSeeker = f
	if perr == nil {
		args, err := kilnArgs(base, plan.Machine, plan.Token)
		if err != nil {
			return nil, err
		}
		if content, err = ukiWithCmdline(f, fi.Size(), args); err != nil {
			return nil, err
		}
	}
	if _, err := s.fleet.ObserveAll(m.MAC, after...); err != nil {
		return nil, err
	}
	return content, nil
}
