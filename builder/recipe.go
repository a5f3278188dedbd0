package builder

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Recipe says what goes into an image: a kernel, a base tree and files laid
// over it. LoadRecipe reads one from YAML; a Recipe built in code is checked
// the same way by Validate.
type Recipe struct {
	// Name names the image; it matches [a-z0-9][a-z0-9._-]*.
	Name string `yaml:"name"`
	// Arch is the machine architecture: "amd64" (the default) or "arm64".
	Arch string `yaml:"arch,omitempty"`
	// Kernel is the host path of the kernel file. Exactly one of Kernel and
	// KernelGlob is set.
	Kernel string `yaml:"kernel"`
	// KernelGlob takes the kernel from the base instead: an absolute glob
	// in the image, e.g. "/boot/vmlinuz-*", that must match exactly one
	// file (recipe: kernel: {base: GLOB}).
	KernelGlob string `yaml:"-"`
	// Base is the path of the base tree: a directory, a tar archive (.tar,
	// .tar.gz, .tgz, .tar.zst, .tar.xz), an OCI image layout directory or
	// a docker save tarball. Exactly one of Base and Debian is set.
	Base string `yaml:"base"`
	// Debian builds the base with mmdebstrap (recipe: base: {debian: ...}).
	Debian *DebianBase `yaml:"-"`
	// Cmdline is the image's default kernel command line.
	Cmdline string `yaml:"cmdline,omitempty"`
	// Owner owns every entry of a directory base and of the recipe's own
	// files and overlays unless a file overrides it. The builder never
	// uses the ownership of the host's files. Archive and container bases
	// keep the owners recorded in them.
	Owner Owner `yaml:"owner,omitempty"`
	// Overlays are host directory trees laid over the base, in order.
	Overlays []string `yaml:"overlays,omitempty"`
	// Users are accounts added to /etc/passwd, /etc/group and /etc/shadow.
	Users []User `yaml:"users,omitempty"`
	// SSHKeys are authorized keys for root (/root/.ssh/authorized_keys).
	SSHKeys []string `yaml:"ssh_keys,omitempty"`
	// Files are laid over the base and overlays, replacing entries at the
	// same path.
	Files []File `yaml:"files,omitempty"`
	// Services are systemd units to enable, found in the tree's unit
	// directories; each is linked into the .wants of its [Install] targets.
	Services []string `yaml:"services,omitempty"`
	// Env holds values for file templates: {{ .Env.NAME }}.
	Env map[string]string `yaml:"env,omitempty"`
	// Outputs are the artifact formats to bake: initramfs (the default),
	// squashfs, disk, iso and uki.
	Outputs []string `yaml:"outputs,omitempty"`

	// Dir is the directory that relative paths (Kernel, Base, File.Source)
	// resolve against. LoadRecipe sets it to the recipe file's directory;
	// empty means the current directory.
	Dir string `yaml:"-"`

	file  string         // the recipe file, for messages
	lines map[string]int // field → YAML line, for messages
}

// DebianBase is a base built by mmdebstrap from Debian's mirror.
type DebianBase struct {
	// Suite is the Debian release, e.g. "bookworm".
	Suite string `yaml:"suite"`
	// Packages are installed on top of the variant's set.
	Packages []string `yaml:"packages,omitempty"`
	// Mirror is the mirror URL; empty means apt's sources on this host.
	Mirror string `yaml:"mirror,omitempty"`
	// Variant is mmdebstrap's package set: essential, apt (the default),
	// required, minbase, buildd, important or standard.
	Variant string `yaml:"variant,omitempty"`
}

// User is an account baked into the image. Anything unique to one machine
// does not belong here: that is the machine's identity.
type User struct {
	Name string `yaml:"name"`
	UID  uint32 `yaml:"uid"`
	// GID is the user's primary group, created with the user's name if no
	// group has it; nil means the same number as UID.
	GID *uint32 `yaml:"gid,omitempty"`
	// Groups are further groups, by name; each must exist in the tree.
	Groups []string `yaml:"groups,omitempty"`
	// Home defaults to /home/NAME (/root for uid 0); Shell to /bin/sh.
	Home  string `yaml:"home,omitempty"`
	Shell string `yaml:"shell,omitempty"`
	// Password is a crypt(3) hash; empty locks the password ("!").
	Password string `yaml:"password,omitempty"`
	// SSHKeys go to HOME/.ssh/authorized_keys.
	SSHKeys []string `yaml:"ssh_keys,omitempty"`
}

// Owner is a numeric user and group.
type Owner struct {
	UID uint32 `yaml:"uid"`
	GID uint32 `yaml:"gid"`
}

// File is one file laid over the base tree. Exactly one of Source and
// Content is set.
type File struct {
	// Path is the absolute, clean path of the file in the image.
	Path string `yaml:"path"`
	// Mode holds the permission bits as an octal string, e.g. "0755".
	Mode string `yaml:"mode"`
	// Source is the path of a host file to copy.
	Source string `yaml:"source,omitempty"`
	// Content is the file's content, given inline.
	Content *string `yaml:"content,omitempty"`
	// UID and GID override the recipe's Owner for this file.
	UID *uint32 `yaml:"uid,omitempty"`
	GID *uint32 `yaml:"gid,omitempty"`
	// Template renders the content with text/template: {{ .Env.NAME }},
	// {{ .Name }} and {{ .Arch }}. A missing key is an error.
	Template bool `yaml:"template,omitempty"`
}

// imageInfoPath is where Build writes the image's name and inputs digest.
const imageInfoPath = "/etc/kiln/image"

// maxCmdline is the x86 kernel's COMMAND_LINE_SIZE, terminator included.
const maxCmdline = 2047

// maxID is the largest uid or gid a recipe may name: (uint32)-1 means
// "unchanged" to chown.
const maxID = 1<<32 - 2

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// RecipeError reports a problem with one field of a recipe.
type RecipeError struct {
	File  string // the recipe file as given to LoadRecipe; empty for recipes built in code
	Line  int    // the field's YAML line, 0 if unknown
	Field string // e.g. "files[2].source"; empty for the whole document
	Err   error
}

// Error implements error, e.g. "recipe tiny.yaml:7: files[2].source: ...".
func (e *RecipeError) Error() string {
	var b strings.Builder
	b.WriteString("recipe")
	if e.File != "" {
		b.WriteString(" " + e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
	} else if e.Line > 0 {
		b.WriteString(" line " + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *RecipeError) Unwrap() error { return e.Err }

// errorf returns a RecipeError for field, with the field's line if known.
func (r *Recipe) errorf(field, format string, args ...any) *RecipeError {
	return &RecipeError{File: r.file, Line: r.line(field), Field: field, Err: fmt.Errorf(format, args...)}
}

// line returns the YAML line of field, or of its closest parent that has one.
func (r *Recipe) line(field string) int {
	for f := field; f != ""; {
		if l, ok := r.lines[f]; ok {
			return l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

// LoadRecipe reads the recipe at path, strictly: unknown fields, wrong types
// and duplicate fields are errors. Relative paths in it resolve against its
// directory. The recipe is validated; the error joins a *RecipeError for
// every problem found.
func LoadRecipe(path string) (*Recipe, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading recipe: %w", err)
	}
	r, err := parseRecipe(path, data)
	if err != nil {
		return nil, err
	}
	if r.Dir, err = filepath.Abs(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("reading recipe: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// resolve returns p resolved against r.Dir.
func (r *Recipe) resolve(p string) string {
	if filepath.IsAbs(p) || r.Dir == "" {
		return p
	}
	return filepath.Join(r.Dir, p)
}

// Validate checks the recipe, including that the kernel, the base and every
// source file exist. The error joins a *RecipeError for every problem.
func (r *Recipe) Validate() error {
	var errs []error
	add := func(e *RecipeError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	switch {
	case r.Name == "":
		add(r.errorf("name", "required"))
	case !nameRE.MatchString(r.Name):
		add(r.errorf("name", "%q: must match [a-z0-9][a-z0-9._-]*", r.Name))
	}
	add(r.checkArch())
	add(r.checkKernel())
	add(r.checkBase())
	add(r.checkCmdline())
	for _, e := range r.checkExtras() {
		add(e)
	}
	if r.Owner.UID > maxID {
		add(r.errorf("owner.uid", "%d: must be at most %d", r.Owner.UID, maxID))
	}
	if r.Owner.GID > maxID {
		add(r.errorf("owner.gid", "%d: must be at most %d", r.Owner.GID, maxID))
	}
	seen := map[string]int{}
	for i := range r.Files {
		for _, e := range r.checkFile(i, seen) {
			add(e)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return joinErrors(errs)
}

func (r *Recipe) checkKernel() *RecipeError {
	switch {
	case r.Kernel != "" && r.KernelGlob != "":
		return r.errorf("kernel", "both a path (%s) and a base glob (%s), want one", r.Kernel, r.KernelGlob)
	case r.KernelGlob != "":
		if !strings.HasPrefix(r.KernelGlob, "/") {
			return r.errorf("kernel.base", "%q: must be an absolute glob in the image, e.g. /boot/vmlinuz-*", r.KernelGlob)
		}
		if _, err := path.Match(r.KernelGlob, ""); err != nil {
			return r.errorf("kernel.base", "%q: %w", r.KernelGlob, err)
		}
		return nil
	case r.Kernel == "":
		return r.errorf("kernel", "required: a host path, or base: GLOB for a kernel in the base")
	}
	fi, err := os.Stat(r.resolve(r.Kernel))
	if err != nil {
		return r.errorf("kernel", "%s: %w", r.Kernel, err)
	}
	if !fi.Mode().IsRegular() {
		return r.errorf("kernel", "%s: not a regular file", r.Kernel)
	}
	return nil
}

func (r *Recipe) checkBase() *RecipeError {
	switch {
	case r.Base != "" && r.Debian != nil:
		return r.errorf("base", "both a path and debian are set, want one")
	case r.Debian != nil:
		return r.checkDebian()
	case r.Base == "":
		return r.errorf("base", "required: a directory, an archive, an OCI layout, a docker save tarball or debian: {...}")
	}
	fi, err := os.Stat(r.resolve(r.Base))
	if err != nil {
		return r.errorf("base", "%s: %w", r.Base, err)
	}
	if fi.IsDir() {
		return nil
	}
	if !fi.Mode().IsRegular() || tarCompression(r.Base) == "" {
		return r.errorf("base", "%s: not a directory or a .tar, .tar.gz, .tgz, .tar.zst or .tar.xz archive", r.Base)
	}
	return nil
}

func (r *Recipe) checkCmdline() *RecipeError {
	if len(r.Cmdline) > maxCmdline {
		return r.errorf("cmdline", "%d bytes long, the kernel takes at most %d", len(r.Cmdline), maxCmdline)
	}
	for _, c := range []byte(r.Cmdline) {
		if c < ' ' || c > '~' {
			return r.errorf("cmdline", "%q: only printable ASCII is allowed", r.Cmdline)
		}
	}
	return nil
}

// checkFile checks r.Files[i]; seen maps the paths of earlier files to their
// index.
func (r *Recipe) checkFile(i int, seen map[string]int) []*RecipeError {
	f := r.Files[i]
	field := func(name string) string { return fmt.Sprintf("files[%d].%s", i, name) }
	var errs []*RecipeError
	if err := checkImagePath(f.Path); err != nil {
		errs = append(errs, r.errorf(field("path"), "%w", err))
	} else if j, dup := seen[f.Path]; dup {
		errs = append(errs, r.errorf(field("path"), "%s: duplicate of files[%d].path", f.Path, j))
	} else {
		for p := path.Dir(f.Path); p != "/"; p = path.Dir(p) {
			if j, ok := seen[p]; ok {
				errs = append(errs, r.errorf(field("path"), "%s: parent %s is a file (files[%d])", f.Path, p, j))
				break
			}
		}
		child := -1
		for q, j := range seen {
			if strings.HasPrefix(q, f.Path+"/") && (child < 0 || j < child) {
				child = j
			}
		}
		if child >= 0 {
			errs = append(errs, r.errorf(field("path"), "%s: is a parent of files[%d].path %s", f.Path, child, r.Files[child].Path))
		}
		seen[f.Path] = i
	}
	if _, err := parseMode(f.Mode); err != nil {
		errs = append(errs, r.errorf(field("mode"), "%w", err))
	}
	switch {
	case f.Source != "" && f.Content != nil:
		errs = append(errs, r.errorf(fmt.Sprintf("files[%d]", i), "both source (%s) and content are set, want exactly one", f.Source))
	case f.Source == "" && f.Content == nil:
		errs = append(errs, r.errorf(fmt.Sprintf("files[%d]", i), "%s: neither source nor content is set, want exactly one", f.Path))
	case f.Source != "":
		if fi, err := os.Stat(r.resolve(f.Source)); err != nil {
			errs = append(errs, r.errorf(field("source"), "%s: %w", f.Source, err))
		} else if !fi.Mode().IsRegular() {
			errs = append(errs, r.errorf(field("source"), "%s: not a regular file", f.Source))
		}
	}
	if f.UID != nil && *f.UID > maxID {
		errs = append(errs, r.errorf(field("uid"), "%d: must be at most %d", *f.UID, maxID))
	}
	if f.GID != nil && *f.GID > maxID {
		errs = append(errs, r.errorf(field("gid"), "%d: must be at most %d", *f.GID, maxID))
	}
	return errs
}

// checkImagePath checks that p is an absolute, clean path in the image other
// than the root and the path Build writes itself.
func checkImagePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("required")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q: must be absolute", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("%q: contains a NUL byte", p)
	case p == "/..", strings.HasPrefix(p, "/../"), strings.HasSuffix(p, "/.."), strings.Contains(p, "/../"):
		return fmt.Errorf("%q: must not contain .. elements", p)
	case p == "/":
		return fmt.Errorf("%q: is the root directory", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q: not clean, want %q", p, path.Clean(p))
	case p == imageInfoPath:
		return fmt.Errorf("%q: reserved, the builder writes it", p)
	}
	return nil
}

// parseMode parses an octal permission string such as "0755".
func parseMode(s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("required, an octal string such as \"0644\"")
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("%q: want an octal mode from \"0000\" to \"7777\"", s)
	}
	return uint32(m), nil
}

// MarshalYAML writes the recipe as LoadRecipe reads it: a kernel from the
// base as {base: GLOB}, a Debian base as {debian: {...}}.
func (r Recipe) MarshalYAML() (any, error) {
	var kernel, base any = r.Kernel, r.Base
	if r.KernelGlob != "" {
		kernel = map[string]string{"base": r.KernelGlob}
	}
	if r.Debian != nil {
		base = map[string]*DebianBase{"debian": r.Debian}
	}
	return struct {
		Name     string            `yaml:"name"`
		Arch     string            `yaml:"arch,omitempty"`
		Kernel   any               `yaml:"kernel"`
		Base     any               `yaml:"base"`
		Cmdline  string            `yaml:"cmdline,omitempty"`
		Owner    Owner             `yaml:"owner,omitempty"`
		Overlays []string          `yaml:"overlays,omitempty"`
		Users    []User            `yaml:"users,omitempty"`
		SSHKeys  []string          `yaml:"ssh_keys,omitempty"`
		Files    []File            `yaml:"files,omitempty"`
		Services []string          `yaml:"services,omitempty"`
		Env      map[string]string `yaml:"env,omitempty"`
		Outputs  []string          `yaml:"outputs,omitempty"`
	}{r.Name, r.Arch, kernel, base, r.Cmdline, r.Owner, r.Overlays, r.Users, r.SSHKeys, r.Files, r.Services, r.Env, r.Outputs}, nil
}
