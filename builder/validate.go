package builder

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/kiln-dev/kiln/builder/debian"
)

// Output formats a recipe may ask for.
const (
	OutputInitramfs = "initramfs"
	OutputSquashfs  = "squashfs"
	OutputDisk      = "disk"
	OutputISO       = "iso"
	OutputUKI       = "uki"
)

// outputOrder is the order outputs are baked and listed in.
var outputOrder = []string{OutputInitramfs, OutputSquashfs, OutputDisk, OutputISO, OutputUKI}

// Architectures a recipe may declare.
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
)

var (
	userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	unitRE     = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]+\.(service|socket|timer|target|path|mount)$`)
)

// arch returns the recipe's architecture, amd64 if unset.
func (r *Recipe) arch() string {
	if r.Arch == "" {
		return ArchAMD64
	}
	return r.Arch
}

// outputs returns the recipe's outputs in baking order, initramfs if none.
func (r *Recipe) outputs() []string {
	if len(r.Outputs) == 0 {
		return []string{OutputInitramfs}
	}
	var out []string
	for _, o := range outputOrder {
		if slices.Contains(r.Outputs, o) {
			out = append(out, o)
		}
	}
	return out
}

func (r *Recipe) wants(output string) bool { return slices.Contains(r.outputs(), output) }

func (r *Recipe) checkArch() *RecipeError {
	switch r.Arch {
	case "", ArchAMD64, ArchARM64:
		return nil
	}
	return r.errorf("arch", "%q: want amd64 or arm64", r.Arch)
}

func (r *Recipe) checkDebian() *RecipeError {
	if r.Debian.Suite == "" {
		return r.errorf("base.debian.suite", "required, e.g. bookworm")
	}
	if r.arch() != ArchAMD64 {
		return r.errorf("base.debian", "arch %s: building a foreign-architecture Debian base needs mmdebstrap with qemu-user emulation, which kiln does not drive yet; use an %s OCI image or tar base", r.arch(), r.arch())
	}
	err := r.debianSpec().Validate()
	if err == nil {
		return nil
	}
	// Report the first problem under the recipe's own field names.
	var fe *debian.FieldError
	if errors.As(err, &fe) {
		field := "base.debian." + strings.ToLower(fe.Field[:1]) + fe.Field[1:]
		return r.errorf(field, "%q: %s", fe.Value, fe.Reason)
	}
	return r.errorf("base.debian", "%w", err)
}

// debianSpec is the recipe's Debian base as mmdebstrap's driver takes it.
func (r *Recipe) debianSpec() debian.Spec {
	d := r.Debian
	return debian.Spec{Suite: d.Suite, Packages: d.Packages, Mirror: d.Mirror, Variant: d.Variant, Arch: r.arch()}
}

// checkExtras checks the fields beyond name, kernel, base, cmdline, owner
// and files.
func (r *Recipe) checkExtras() []*RecipeError {
	var errs []*RecipeError
	add := func(e *RecipeError) { errs = append(errs, e) }
	for i, o := range r.Outputs {
		field := fmt.Sprintf("outputs[%d]", i)
		switch {
		case !slices.Contains(outputOrder, o):
			add(r.errorf(field, "%q: want one of %s", o, strings.Join(outputOrder, ", ")))
		case slices.Index(r.Outputs, o) != i:
			add(r.errorf(field, "%q: listed twice", o))
		case (o == OutputUKI || o == OutputISO) && r.arch() != ArchAMD64:
			add(r.errorf(field, "%q: only amd64 images have it (the EFI stub and isolinux are x86 only)", o))
		}
	}
	for i, o := range r.Overlays {
		field := fmt.Sprintf("overlays[%d]", i)
		if fi, err := os.Stat(r.resolve(o)); err != nil {
			add(r.errorf(field, "%s: %w", o, err))
		} else if !fi.IsDir() {
			add(r.errorf(field, "%s: not a directory", o))
		}
	}
	for i, k := range r.SSHKeys {
		if err := checkSSHKey(k); err != nil {
			add(r.errorf(fmt.Sprintf("ssh_keys[%d]", i), "%w", err))
		}
	}
	names, uids := map[string]int{}, map[uint32]int{}
	for i, u := range r.Users {
		field := func(f string) string { return fmt.Sprintf("users[%d].%s", i, f) }
		switch j, dup := names[u.Name]; {
		case !userNameRE.MatchString(u.Name):
			add(r.errorf(field("name"), "%q: want [a-z_][a-z0-9_-]*, at most 31 characters", u.Name))
		case dup:
			add(r.errorf(field("name"), "%q: also users[%d]", u.Name, j))
		}
		names[u.Name] = i
		if j, dup := uids[u.UID]; dup {
			add(r.errorf(field("uid"), "%d: also users[%d]", u.UID, j))
		}
		uids[u.UID] = i
		if u.UID > maxID {
			add(r.errorf(field("uid"), "%d: must be at most %d", u.UID, maxID))
		}
		if u.GID != nil && *u.GID > maxID {
			add(r.errorf(field("gid"), "%d: must be at most %d", *u.GID, maxID))
		}
		for j, g := range u.Groups {
			if !userNameRE.MatchString(g) {
				add(r.errorf(fmt.Sprintf("users[%d].groups[%d]", i, j), "%q: not a group name", g))
			}
		}
		for _, f := range []struct{ name, v string }{{"home", u.Home}, {"shell", u.Shell}} {
			if f.v == "" {
				continue
			}
			if err := checkImagePath(f.v); err != nil {
				add(r.errorf(field(f.name), "%w", err))
			} else if strings.ContainsAny(f.v, ":\n") {
				add(r.errorf(field(f.name), "%q: must not contain ':' or a newline", f.v))
			}
		}
		if strings.ContainsAny(u.Password, ":\n") {
			add(r.errorf(field("password"), "must not contain ':' or a newline (want a crypt(3) hash)"))
		} else if u.Password != "" && !strings.HasPrefix(u.Password, "$") && !strings.HasPrefix(u.Password, "!") && u.Password != "*" {
			add(r.errorf(field("password"), "not a crypt(3) hash (want $id$..., ! or *): never put a clear-text password in a recipe"))
		}
		for j, k := range u.SSHKeys {
			if err := checkSSHKey(k); err != nil {
				add(r.errorf(fmt.Sprintf("users[%d].ssh_keys[%d]", i, j), "%w", err))
			}
		}
	}
	for i, s := range r.Services {
		if !unitRE.MatchString(s) {
			add(r.errorf(fmt.Sprintf("services[%d]", i), "%q: not a systemd unit name (e.g. kiln-ready.service)", s))
		} else if slices.Index(r.Services, s) != i {
			add(r.errorf(fmt.Sprintf("services[%d]", i), "%q: listed twice", s))
		}
	}
	for _, k := range sortedKeys(r.Env) {
		field := "env." + k
		if !envNameRE.MatchString(k) {
			add(r.errorf(field, "%q: want a name matching [A-Za-z_][A-Za-z0-9_]*", k))
		}
		if strings.ContainsRune(r.Env[k], 0) {
			add(r.errorf(field, "contains a NUL byte"))
		}
	}
	for i, f := range r.Files {
		if f.Template && f.Content != nil {
			if _, err := parseTemplate(f.Path, *f.Content); err != nil {
				add(r.errorf(fmt.Sprintf("files[%d].content", i), "%w", err))
			}
		}
	}
	return errs
}

// checkSSHKey checks that k is one authorized_keys line: a key type and a
// base64 key, with an optional comment.
func checkSSHKey(k string) error {
	if strings.ContainsAny(k, "\r\n\x00") {
		return fmt.Errorf("must be one line")
	}
	f := strings.Fields(k)
	if len(f) < 2 {
		return fmt.Errorf("%.40q: want TYPE BASE64 [COMMENT]", k)
	}
	known := strings.HasPrefix(f[0], "ssh-") || strings.HasPrefix(f[0], "ecdsa-sha2-") || strings.HasPrefix(f[0], "sk-")
	if !known {
		return fmt.Errorf("%q: unknown key type (want ssh-ed25519, ssh-rsa, ecdsa-sha2-..., sk-...)", f[0])
	}
	if _, err := base64.StdEncoding.DecodeString(f[1]); err != nil {
		return fmt.Errorf("%s key: not base64: %w", f[0], err)
	}
	return nil
}

// parseTemplate parses a file template; {{ .Env.NAME }} of an unset name
// is an error when it runs.
func parseTemplate(name, text string) (*template.Template, error) {
	return template.New(path.Base(name)).Option("missingkey=error").Parse(text)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
