package web

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/identity"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/installer"
)

// haltDelay is how long a non-booting script waits before handing back to
// the firmware, so the operator can read the console.
const haltDelay = "10"

// bootScript serves GET /boot/{mac}.ipxe: the iPXE script of the machine's
// next boot, which fleet decides (fleet.StartBoot): its image from the
// network, the installer (install mode, when the generation is not on the
// disk yet), its local disk (install mode, installed) or nothing (unknown,
// discovered or retired machines), with a script that says why.
//
// Every GET starts a boot: it mints the boot's token, which the script
// passes on in the URLs of the kernel command line. The script is rendered
// once before, with a placeholder token, so that an image that cannot boot
// is a 500 that changes nothing. HEAD stops there.
func (s *Server) bootScript(w http.ResponseWriter, r *http.Request) error {
	mac, err := macVar(r)
	if err != nil {
		return err
	}
	log := s.log.With("mac", mac)
	m, err := s.fleet.Get(mac)
	if errors.Is(err, fleet.ErrNotFound) {
		if r.Method == http.MethodGet {
			if _, created, err := s.fleet.Discover(mac); err != nil {
				log.Warn("boot script: recording a discovered machine", "err", err)
			} else if created {
				log.Info("boot script: machine discovered")
			}
		}
		log.Info("boot script: unknown machine, not booting")
		return writeScript(w, haltScript(fmt.Sprintf("kiln: unknown machine %s: register it with kiln machines add", mac)))
	}
	if err != nil {
		return err
	}
	if m.State == fleet.Discovered || m.State == fleet.Retired {
		log.Info("boot script: machine boots nothing", "state", m.State)
		return writeScript(w, haltScript(fmt.Sprintf("kiln: machine %s is %s: it boots nothing", mac, m.State)))
	}
	base, err := s.baseURL(r)
	if err != nil {
		return err
	}
	preview, err := s.renderScript(log, base, expectedBoot(m), m, "token")
	if err != nil || r.Method == http.MethodHead {
		return s.writeRendered(w, preview, err)
	}
	plan, err := s.fleet.StartBoot(mac, fleet.BootNetwork)
	if err != nil {
		return err
	}
	m = plan.Machine
	log = log.With("hostname", m.Hostname, "image", m.Image, "generation", m.Generation, "boot", plan.Kind)
	script, err := s.renderScript(log, base, plan.Kind, m, plan.Token)
	if err == nil {
		log.Info("boot script served")
	}
	return s.writeRendered(w, script, err)
}

// expectedBoot is the boot fleet.StartBoot will start for m, for the
// preview of its script.
func expectedBoot(m fleet.Machine) fleet.BootKind {
	switch {
	case m.Mode != fleet.Install:
		return fleet.BootNetwork
	case m.Installed == m.Generation:
		return fleet.BootDisk
	}
	return fleet.BootInstall
}

// renderScript renders the script of a boot of kind. A script that says
// why the machine boots nothing (its image is not in the store) is not an
// error.
func (s *Server) renderScript(log *slog.Logger, base string, kind fleet.BootKind, m fleet.Machine, token string) ([]byte, error) {
	switch kind {
	case fleet.BootNothing:
		return haltScript(fmt.Sprintf("kiln: machine %s is %s: it boots nothing", m.MAC, m.State)), nil
	case fleet.BootDisk:
		return diskScript(m), nil
	}
	man, err := s.manifest(m.Image)
	if errors.Is(err, images.ErrNotFound) {
		log.Error("boot script: assigned image is not in the image store, not booting", "err", err)
		return haltScript(fmt.Sprintf("kiln: image %s of %s is not in the image store", printable(m.Image), m.Hostname)), errNoImage
	}
	if err != nil {
		return nil, err
	}
	if kind == fleet.BootInstall {
		return renderInstall(base, m, man, token)
	}
	return renderBoot(base, m, man, token)
}

// errNoImage says that the script renderScript returned boots nothing
// because the machine's image is not in the store.
var errNoImage = errors.New("image not in the store")

// writeRendered writes a rendered script, the halt script of a missing
// image, or the rendering error as a 500.
func (s *Server) writeRendered(w http.ResponseWriter, script []byte, err error) error {
	switch {
	case errors.Is(err, errNoImage):
		return writeScript(w, script)
	case err != nil:
		var he HTTPError
		if errors.As(err, &he) {
			return err
		}
		return HTTPError{Code: http.StatusInternalServerError, Msg: "rendering boot script", Err: err}
	}
	return writeScript(w, script)
}

// diskScript hands the machine back to its firmware, which boots the next
// entry of its boot order: the disk kiln installed. "exit 1", not 0: OVMF
// opens its setup menu when a boot option (a chain-loaded iPXE) returns
// success, and tries the next option when it fails.
func diskScript(m fleet.Machine) []byte {
	return fmt.Appendf(nil, "#!ipxe\necho kiln: %s boots generation %d from its local disk\nexit 1\n",
		printable(m.Hostname), m.Installed)
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

// renderBoot renders the script that boots m into the image of man. token
// is the boot's token: the identity, cloud-init (NoCloud) and phone-home
// URLs on the kernel command line carry it.
func renderBoot(base string, m fleet.Machine, man images.Manifest, token string) ([]byte, error) {
	kernel, initrd, args, err := bootArtifacts(base, m, man)
	if err != nil {
		return nil, err
	}
	kiln, err := kilnArgs(base, m, token)
	if err != nil {
		return nil, err
	}
	args = append(args, kiln)
	return bootScriptText(base, m, fmt.Sprintf("booting %s into %s", m.Hostname, m.Image), kernel.Digest,
		strings.Join(args, " "), []namedURL{{"initrd", blobURL(base, initrd.Digest, m.MAC)}})
}

// kilnArgs are the kernel parameters that tell a booting machine where its
// identity is and where to phone home, with the boot's token: kiln's own
// (kiln.identity=, kiln.phonehome=, kiln.image=) and cloud-init's
// (ds=nocloud-net;s=..., see identity.Identity.Cmdline).
func kilnArgs(base string, m fleet.Machine, token string) (string, error) {
	q := "?token=" + url.QueryEscape(token)
	args := identity.Cmdline(base+"/identity/"+m.MAC+q, base+"/phone-home/"+m.MAC+q, m.Image)
	if id := m.Identity(); id.MachineID != "" {
		ds, err := id.Cmdline(base + "/nocloud/" + m.MAC + "/" + url.PathEscape(token) + "/")
		if err != nil {
			return "", err
		}
		args += " " + ds
	}
	return args, nil
}

// renderInstall renders the script of an install boot: the image's kernel
// with kiln's installer initramfs and the image's own initrd (for its
// kernel modules) after it, started as rdinit=/kiln-installer (see
// installer.Initramfs for the order). The installer fetches its plan from
// kiln.install=, which carries the boot's token.
func renderInstall(base string, m fleet.Machine, man images.Manifest, token string) ([]byte, error) {
	if _, ok := man.Artifact("disk"); !ok {
		return nil, fmt.Errorf("image %s has no disk output to install: bake it with outputs: [disk]", m.Image)
	}
	kernel, initrd, _, err := bootArtifacts(base, m, man)
	if err != nil {
		return nil, err
	}
	args := []string{"initrd=installer", "initrd=image", "rdinit=" + installer.InitPath}
	if c := strings.TrimSpace(man.Cmdline); c != "" {
		args = append(args, c)
	}
	args = append(args, "kiln.install="+base+"/install/"+m.MAC+"?token="+url.QueryEscape(token))
	return bootScriptText(base, m, fmt.Sprintf("installing %s on %s (generation %d)", m.Image, m.Hostname, m.Generation),
		kernel.Digest, strings.Join(args, " "), []namedURL{
			{"installer", base + "/install/initramfs.cpio"},
			{"image", blobURL(base, initrd.Digest, m.MAC)},
		})
}

// bootArtifacts returns the kernel and the initrd that boot man, and the
// kernel arguments that go with them: the initrd's name, the image's own
// command line and, for a squashfs root, where to fetch and how to verify it.
//
// An image with a squashfs root boots its stage-1 initramfs, which fetches
// the squashfs by digest (kiln.squashfs=URL kiln.squashfs.digest=DIGEST),
// verifies and mounts it; it is preferred to a whole-root initrd when an
// image has both, since it needs far less memory during boot. Otherwise
// the initrd is the whole root.
func bootArtifacts(base string, m fleet.Machine, man images.Manifest) (kernel, initrd images.Artifact, args []string, err error) {
	kernel, ok := man.Artifact("kernel")
	if !ok {
		return kernel, initrd, nil, fmt.Errorf("image %s has no kernel artifact", m.Image)
	}
	args = []string{"initrd=initrd"}
	if c := strings.TrimSpace(man.Cmdline); c != "" {
		args = append(args, c)
	}
	initrd, ok = man.Artifact("initrd")
	if root, hasRoot := man.Artifact("squashfs"); hasRoot {
		stage1, ok := man.Artifact("stage1")
		if !ok {
			return kernel, initrd, nil, fmt.Errorf("image %s has a squashfs but no stage1 artifact", m.Image)
		}
		initrd = stage1
		args = append(args, fmt.Sprintf("kiln.squashfs=%s kiln.squashfs.digest=%s", blobURL(base, root.Digest, m.MAC), root.Digest))
	} else if !ok {
		return kernel, initrd, nil, fmt.Errorf("image %s has neither an initrd nor a squashfs artifact", m.Image)
	}
	return kernel, initrd, args, nil
}

// namedURL is one initrd of a boot script.
type namedURL struct{ name, url string }

func blobURL(base string, d images.Digest, mac string) string {
	return fmt.Sprintf("%s/blobs/%s?mac=%s", base, d, mac)
}

// bootScriptText writes the iPXE script. Every value is checked to be one
// line, so that nothing from a recipe or an identity can add a command.
func bootScriptText(base string, m fleet.Machine, what string, kernel images.Digest, cmdline string, initrds []namedURL) ([]byte, error) {
	vals := []string{base, m.MAC, m.Hostname, m.Image, what, cmdline}
	for _, i := range initrds {
		vals = append(vals, i.name, i.url)
	}
	for _, v := range vals {
		if printable(v) != v {
			return nil, fmt.Errorf("value %q would break the iPXE script", v)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "#!ipxe\n")
	fmt.Fprintf(&b, "echo kiln: %s\n", what)
	fmt.Fprintf(&b, "kernel %s %s\n", blobURL(base, kernel, m.MAC), cmdline)
	for _, i := range initrds {
		fmt.Fprintf(&b, "initrd --name %s %s\n", i.name, i.url)
	}
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
