// Package debian builds Debian root filesystems with mmdebstrap and writes
// them as tar archives.
//
// A Spec says what to install; Bootstrap runs mmdebstrap for it. Builds
// are reproducible: with the same Spec and the same mirror content, two
// runs write the same archive, byte for byte.
// SOURCE_DATE_EPOCH is fixed (to Spec.SourceDateEpoch, 0 by default), so
// every mtime is clamped to it; mmdebstrap removes the apt lists and
// caches, the dpkg, apt and alternatives logs and ldconfig's aux-cache, and
// leaves /etc/machine-id empty (if there is one), and a hook replaces the
// host-specific files mmdebstrap copies in: /etc/resolv.conf is removed,
// /etc/hostname reads "localhost" and files left in /var/log are emptied.
package debian

// BUG(debian): The mirror's content changes over time (point releases,
// security updates), so the same Spec, and so the same Key, builds
// different roots on different days.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Defaults for the zero fields of a Spec.
const (
	DefaultVariant = "apt"
	DefaultArch    = "amd64"
)

// DefaultComponents are the archive components used when Spec.Components
// is empty.
var DefaultComponents = []string{"main"}

// Variants are the mmdebstrap variants a Spec may name (see mmdebstrap(1),
// VARIANTS): essential is the Essential:yes set; apt adds apt; required
// (minbase is the same) adds Priority: required; buildd adds
// build-essential; important and standard add those priorities.
var Variants = []string{"essential", "apt", "required", "minbase", "buildd", "important", "standard"}

// Spec describes a Debian root to build.
type Spec struct {
	// Suite is the release to install: a codename such as "bookworm" or
	// a suite such as "stable" or "sid".
	Suite string
	// Packages are installed on top of the variant's set, with their
	// dependencies (not recommends). Each is a plain Debian package name;
	// order and repeats do not matter.
	Packages []string
	// Mirror is the archive's http, https or file URL, such as
	// "http://deb.debian.org/debian" or "file:///srv/mirror/debian" (a
	// local repository, bind-mounted read-only into the root while
	// packages install, by mmdebstrap's file-mirror-automount hook). ""
	// lets mmdebstrap choose: it uses http://deb.debian.org/debian and,
	// for a stable release, adds the -updates and -security suites.
	// mmdebstrap does not read the host's apt sources. A Mirror given
	// here is used alone, for Suite only, and must be signed by a key
	// the host's apt trusts.
	Mirror string
	// Variant is the package set; "" means DefaultVariant ("apt"). See
	// Variants.
	Variant string
	// Components are the archive components, such as "main" and
	// "non-free-firmware"; empty means DefaultComponents.
	Components []string
	// Arch is the dpkg architecture of the root; "" means DefaultArch
	// ("amd64"). Another architecture than the host's needs qemu-user
	// binfmt support.
	Arch string
	// Slim leaves out documentation (except copyright files), manual and
	// info pages, translations and lintian overrides, through dpkg
	// path-exclude options that stay in the root's
	// /etc/dpkg/dpkg.cfg.d/99mmdebstrap, so later installs stay slim.
	Slim bool
	// SourceDateEpoch is SOURCE_DATE_EPOCH, in seconds since 1970: no
	// mtime in the root is later. 0, the default, makes every mtime 0.
	SourceDateEpoch int64
}

// FieldError is an invalid field of a Spec.
type FieldError struct {
	Field  string // such as "Suite" or "Packages[2]"
	Value  string
	Reason string
}

// Error says which field is invalid, its value and why.
func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid Spec.%s %q: %s", e.Field, e.Value, e.Reason)
}

var (
	// Debian Policy 5.6.1: lowercase letters, digits, plus, minus and
	// periods, at least two characters, starting alphanumeric.
	packageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	suiteName   = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`)
	// Components such as main, contrib, non-free-firmware.
	componentName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	// dpkg architectures such as amd64, arm64, ppc64el, x32.
	archName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// maxName bounds suite, package, component and architecture names.
const maxName = 128

// Validate checks the suite, package, component and architecture names,
// the variant, the mirror URL and the epoch. Its error joins a *FieldError
// for each bad field, naming the field and its value.
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, value, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Reason: reason})
	}
	name := func(field, value string, re *regexp.Regexp, rule string) {
		if len(value) > maxName || !re.MatchString(value) {
			bad(field, value, rule)
		}
	}
	if s.Suite == "" {
		bad("Suite", "", "empty; want a release such as bookworm or stable")
	} else {
		name("Suite", s.Suite, suiteName, "want lowercase letters, digits, '.', '+' and '-', such as bookworm or stable")
	}
	for i, p := range s.Packages {
		name(fmt.Sprintf("Packages[%d]", i), p, packageName,
			"not a Debian package name: lowercase letters, digits, '+', '-' and '.', at least 2 characters, starting with a letter or digit")
	}
	if s.Variant != "" && !slices.Contains(Variants, s.Variant) {
		bad("Variant", s.Variant, "want one of "+strings.Join(Variants, ", "))
	}
	for i, c := range s.Components {
		name(fmt.Sprintf("Components[%d]", i), c, componentName, "want lowercase letters, digits and '-', such as main or non-free-firmware")
	}
	if s.Arch != "" {
		name("Arch", s.Arch, archName, "want a dpkg architecture such as amd64 or arm64")
	}
	if s.Mirror != "" {
		if reason := checkMirror(s.Mirror); reason != "" {
			bad("Mirror", s.Mirror, reason)
		}
	}
	if s.SourceDateEpoch < 0 {
		bad("SourceDateEpoch", fmt.Sprint(s.SourceDateEpoch), "negative")
	}
	return errors.Join(errs...)
}

// checkMirror returns why m is not a usable mirror URL, or "".
func checkMirror(m string) string {
	if strings.ContainsAny(m, " \t\r\n") {
		return "contains white space"
	}
	u, err := url.Parse(m)
	switch {
	case err != nil:
		return "not a URL: " + err.Error()
	case u.Scheme == "file" && (u.Host != "" || !strings.HasPrefix(u.Path, "/")):
		return "want a file:///absolute/path URL"
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file":
		return "want an http, https or file URL"
	case u.Host == "" && u.Scheme != "file":
		return "no host"
	case u.User != nil:
		return "credentials in the URL would be written into the root's sources.list; use apt auth.conf"
	case u.RawQuery != "" || u.Fragment != "":
		return "a mirror URL has no query or fragment"
	}
	return ""
}

// normalized returns the spec with defaults filled in, packages sorted
// and repeats dropped, the way Bootstrap runs it.
func (s Spec) normalized() Spec {
	if s.Variant == "" {
		s.Variant = DefaultVariant
	}
	if s.Arch == "" {
		s.Arch = DefaultArch
	}
	if len(s.Components) == 0 {
		s.Components = DefaultComponents
	}
	// Components stay in order: it shows in the root's sources.list.
	var comps []string
	for _, c := range s.Components {
		if !slices.Contains(comps, c) {
			comps = append(comps, c)
		}
	}
	s.Components = comps
	s.Packages = slices.Compact(slices.Sorted(slices.Values(s.Packages)))
	return s
}

// keyVersion changes whenever Bootstrap changes what it builds from a
// Spec (its mmdebstrap options or hooks), so cached roots go stale.
const keyVersion = 1

// Key returns a stable cache key for the spec: the hex SHA-256 of its
// normalized form (defaults filled in, packages sorted and deduplicated)
// and of the version of Bootstrap's recipe. Specs that build the same root
// share a key. The key does not cover the mirror's content, which changes
// over time, nor the mmdebstrap version.
func (s Spec) Key() string {
	n := s.normalized()
	b, err := json.Marshal(struct {
		Version int
		Spec    Spec
	}{keyVersion, n})
	if err != nil {
		panic(err) // a Spec always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Options tune Bootstrap. The zero value is ready to use.
type Options struct {
	// Log receives a line when the bootstrap starts and ends, and each
	// line of mmdebstrap's output at Debug level; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called with each line mmdebstrap writes to
	// standard error (such as "I: installing essential packages..."),
	// from a goroutine of Bootstrap's, one line at a time.
	Progress func(line string)
	// Mode is mmdebstrap's --mode. "" means "unshare" when running as
	// root, whose private mount namespace leaves no mounts behind even if
	// mmdebstrap is killed, and "auto" otherwise. All modes write the
	// same archive.
	Mode string
	// TempDir is where mmdebstrap builds the root before packing it
	// (its TMPDIR); "" means os.TempDir(). A tmpfs is faster.
	TempDir string
}
