package web

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/images"
)

// haltDelay is how long a non-booting script waits before handing back to
// the firmware, so the operator can read the console.
const haltDelay = "10"

// bootScript serves GET /boot/{mac}.ipxe: the iPXE script that boots a
// known machine into its assigned image, or a script that says why not.
func (s *Server) bootScript(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	log := s.log.With("mac", mac)
	m, err := s.fleet.Get(mac)
	if errors.Is(err, fleet.ErrNotFound) {
		log.Info("boot script: unknown machine, not booting")
		return writeScript(w, haltScript(fmt.Sprintf("kiln: unknown machine %s: register it with kiln machines add", mac)))
	}
	if err != nil {
		return err
	}
	log = log.With("hostname", m.Hostname, "image", m.Image)
	man, err := s.manifest(m.Image)
	if errors.Is(err, images.ErrNotFound) {
		log.Error("boot script: assigned image is not in the image store, not booting", "err", err)
		return writeScript(w, haltScript(fmt.Sprintf("kiln: image %s of %s is not in the image store", printable(m.Image), m.Hostname)))
	}
	if err != nil {
		return err
	}
	base, err := s.baseURL(r)
	if err != nil {
		return err
	}
	script, err := renderBoot(base, m, man)
	if err != nil {
		return HTTPError{Code: http.StatusInternalServerError, Msg: "rendering boot script", Err: err}
	}
	if r.Method == http.MethodGet {
		if _, err := s.fleet.Observe(mac, fleet.EventScript, m.Image); err != nil {
			return err
		}
	}
	log.Info("boot script served", "method", r.Method)
	return writeScript(w, script)
}

// manifest returns the manifest of image id. An ID that is not a digest
// cannot be in the store, and is reported as images.ErrNotFound.
func (s *Server) manifest(id string) (images.Manifest, error) {
	d, err := images.ParseDigest(id)
	if err != nil {
		return images.Manifest{}, fmt.Errorf("image %q: %w", id, images.ErrNotFound)
	}
	return s.images.Get(d)
}

// renderBoot renders the script that boots m into the image of man. Every
// value is checked to be one line, so that nothing from a recipe can add a
// command to the script.
//
// An image with a squashfs root boots its stage-1 initramfs, which fetches
// the squashfs by digest (kiln.squashfs=URL kiln.squashfs.digest=DIGEST),
// verifies and mounts it; it is preferred to a whole-root initrd when an
// image has both, since it needs far less memory during boot. Otherwise
// the initrd is the whole root.
func renderBoot(base string, m fleet.Machine, man images.Manifest) ([]byte, error) {
	kernel, ok := man.Artifact("kernel")
	if !ok {
		return nil, fmt.Errorf("image %s has no kernel artifact", m.Image)
	}
	args := []string{"initrd=initrd"}
	if c := strings.TrimSpace(man.Cmdline); c != "" {
		args = append(args, c)
	}
	initrd, ok := man.Artifact("initrd")
	if root, hasRoot := man.Artifact("squashfs"); hasRoot {
		stage1, ok := man.Artifact("stage1")
		if !ok {
			return nil, fmt.Errorf("image %s has a squashfs but no stage1 artifact", m.Image)
		}
		initrd = stage1
		args = append(args, fmt.Sprintf("kiln.squashfs=%s/blobs/%s?mac=%s kiln.squashfs.digest=%s", base, root.Digest, m.MAC, root.Digest))
	} else if !ok {
		return nil, fmt.Errorf("image %s has neither an initrd nor a squashfs artifact", m.Image)
	}
	args = append(args, identity.Cmdline(base+"/identity/"+m.MAC, base+"/phone-home/"+m.MAC, m.Image))
	cmdline := strings.Join(args, " ")
	for _, v := range []string{base, m.MAC, m.Hostname, m.Image, cmdline} {
		if printable(v) != v {
			return nil, fmt.Errorf("value %q would break the iPXE script", v)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "#!ipxe\n")
	fmt.Fprintf(&b, "echo kiln: booting %s into %s\n", m.Hostname, m.Image)
	fmt.Fprintf(&b, "kernel %s/blobs/%s?mac=%s %s\n", base, kernel.Digest, m.MAC, cmdline)
	fmt.Fprintf(&b, "initrd --name initrd %s/blobs/%s?mac=%s\n", base, initrd.Digest, m.MAC)
	fmt.Fprintf(&b, "boot\n")
	return b.Bytes(), nil
}

// haltScript returns a script that shows msg and hands back to the
// firmware without booting anything.
func haltScript(msg string) []byte {
	return fmt.Appendf(nil, "#!ipxe\necho %s\necho kiln: not booting; retrying in %s seconds\nsleep %s\nexit 1\n",
		printable(msg), haltDelay, haltDelay)
}

// printable returns s with every control character replaced by '?'.
func printable(s string) string {
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return '?'
		}
		return c
	}, s)
}

func writeScript(w http.ResponseWriter, script []byte) error {
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", script)
	return nil
}
