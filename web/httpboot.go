package web

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
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
		w.Header().Set("ETag", `"`+string(uki.Digest)+`"`)
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
	if r.Method == http.MethodGet {
		if _, err := s.fleet.ObserveAll(mac, before...); err != nil {
			return err
		}
		if what == "uki" {
			plan, err := s.fleet.StartBoot(mac, fleet.BootUKI)
			if err != nil {
				return err
			}
			if plan.Kind == fleet.BootNothing {
				log.Info("http boot: machine boots nothing", "state", plan.Machine.State)
				return HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("machine %s is %s: it boots nothing", mac, plan.Machine.State)}
			}
			if _, err := s.fleet.ObserveAll(mac, after...); err != nil {
				return err
			}
		}
	}
	log.Info("http boot served", "method", r.Method, "file", what)
	w.Header().Set("Content-Type", "application/efi")
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}
