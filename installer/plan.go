// Package installer is the install-to-disk side of kiln: the pieces of the
// small static program (cmd/kiln-installer) that runs as /init of an
// install boot, fetches the machine's install plan from kiln, streams the
// image's disk output to the local disk while verifying its sha256, writes
// the identity seed at the end of the disk, reports the outcome and
// reboots. It also builds the initramfs that carries that program.
//
// Everything here works on ordinary files, directories and HTTP servers,
// so it is tested without root; only cmd/kiln-installer touches the
// machine (mounts, kernel modules, network, reboot).
//
// A disk is never left bootable half-written: the first and last MiB of
// the image (MBR, GPT primary and backup) are held back in memory, the
// disk's copies are zeroed before streaming, and they are written only
// once the whole image matched its sha256 (see Write).
package installer

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

const (
	// MiB is 1<<20 bytes.
	MiB = 1 << 20

	// HoldBack is how much of each end of the image Write keeps in memory
	// until the image is verified: the MBR and the primary GPT at the
	// start, the backup GPT at the end.
	HoldBack = 1 * MiB

	// SeedAreaSize is the size of the seed area at the end of the target
	// disk (see WriteSeed).
	SeedAreaSize = 1 * MiB

	// MaxSeed is the largest seed text a plan may carry.
	MaxSeed = 60 << 10

	// MinDiskSize is the smallest disk image a plan may name: both
	// held-back regions must fit without overlapping.
	MinDiskSize = 2*HoldBack + 1

	// maxPlanBody bounds the plan document FetchPlan reads. JSON escapes
	// can make a 60 KiB seed six times larger.
	maxPlanBody = 1 * MiB
)

// ErrForbidden is returned (wrapped) by FetchPlan when kiln refuses the
// install token (HTTP 403): a stale, replayed or foreign token.
var ErrForbidden = errors.New("forbidden")

// ErrInvalidPlan is wrapped by every plan validation error.
var ErrInvalidPlan = errors.New("invalid install plan")

// Plan is what kiln tells an installer to do, served as JSON at the URL of
// the kernel parameter kiln.install.
type Plan struct {
	// MAC is the machine's boot NIC, e.g. "52:54:00:12:34:56".
	MAC string `json:"mac"`
	// Generation is the machine generation being installed (>= 1).
	Generation int `json:"generation"`
	// Image is the image ID, e.g. "sha256:<hex>".
	Image string `json:"image"`
	// DiskURL is where the raw disk image is served (http or https,
	// answering Range requests).
	DiskURL string `json:"disk_url"`
	// DiskSHA256 is the lowercase or uppercase hex sha256 of the disk image.
	DiskSHA256 string `json:"disk_sha256"`
	// DiskSize is the disk image's size in bytes, more than 2 MiB.
	DiskSize int64 `json:"disk_size"`
	// ReportURL is where the installer POSTs its outcome.
	ReportURL string `json:"report_url"`
	// Seed is the text written to the disk's seed area (at most MaxSeed
	// bytes, no NUL byte): shell assignments such as KILN_IDENTITY_URL=...
	Seed string `json:"seed"`
}

// Validate checks every field of p; the error names the first bad field and
// wraps ErrInvalidPlan.
func (p Plan) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidPlan, field, fmt.Sprintf(format, args...))
	}
	if hw, err := net.ParseMAC(p.MAC); err != nil || len(hw) != 6 {
		return bad("mac", "%q is not a 6-byte MAC address", p.MAC)
	}
	if p.Generation < 1 {
		return bad("generation", "%d is not a generation (want >= 1)", p.Generation)
	}
	if p.Image == "" {
		return bad("image", "missing")
	}
	if len(p.Image) > 256 || strings.IndexFunc(p.Image, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return bad("image", "%q is not an image ID (printable, no spaces, at most 256 bytes)", p.Image)
	}
	if err := checkURL(p.DiskURL); err != nil {
		return bad("disk_url", "%v", err)
	}
	if b, err := hex.DecodeString(p.DiskSHA256); err != nil || len(b) != 32 {
		return bad("disk_sha256", "%q is not 64 hex digits", p.DiskSHA256)
	}
	if p.DiskSize < MinDiskSize {
		return bad("disk_size", "%d bytes; an image must be larger than 2 MiB (%d bytes)", p.DiskSize, 2*HoldBack)
	}
	if err := checkURL(p.ReportURL); err != nil {
		return bad("report_url", "%v", err)
	}
	if len(p.Seed) > MaxSeed {
		return bad("seed", "%d bytes, more than %d", len(p.Seed), MaxSeed)
	}
	if strings.IndexByte(p.Seed, 0) >= 0 {
		return bad("seed", "contains a NUL byte")
	}
	if !utf8.ValidString(p.Seed) {
		return bad("seed", "is not UTF-8")
	}
	return nil
}

// checkURL accepts absolute http and https URLs with a host.
func checkURL(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host", s)
	}
	return nil
}

// DecodePlan decodes a JSON plan strictly (no unknown fields, nothing after
// the object) and validates it.
func DecodePlan(data []byte) (Plan, error) {
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Plan{}, fmt.Errorf("%w: %v", ErrInvalidPlan, err)
	}
	if dec.More() {
		return Plan{}, fmt.Errorf("%w: data after the JSON object", ErrInvalidPlan)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Plan{}, fmt.Errorf("%w: data after the JSON object", ErrInvalidPlan)
	}
	if err := p.Validate(); err != nil {
		return Plan{}, err
	}
	return p, nil
}

// FetchPlan GETs the plan at planURL and decodes it with DecodePlan. A 403
// wraps ErrForbidden and carries kiln's message; any other status than 200
// is an error naming it.
func FetchPlan(ctx context.Context, client *http.Client, planURL string) (Plan, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, planURL, nil)
	if err != nil {
		return Plan{}, fmt.Errorf("fetching plan %s: %w", redact(planURL), err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Plan{}, fmt.Errorf("fetching plan %s: %w", redact(planURL), scrub(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPlanBody+1))
	if err != nil {
		return Plan{}, fmt.Errorf("fetching plan %s: reading body: %w", redact(planURL), err)
	}
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return Plan{}, fmt.Errorf("fetching plan %s: %w: %s", redact(planURL), ErrForbidden, snippet(body))
	case resp.StatusCode != http.StatusOK:
		return Plan{}, fmt.Errorf("fetching plan %s: %s: %s", redact(planURL), resp.Status, snippet(body))
	case len(body) > maxPlanBody:
		return Plan{}, fmt.Errorf("fetching plan %s: %w: larger than %d bytes", redact(planURL), ErrInvalidPlan, maxPlanBody)
	}
	p, err := DecodePlan(body)
	if err != nil {
		return Plan{}, fmt.Errorf("fetching plan %s: %w", redact(planURL), err)
	}
	return p, nil
}

// snippet returns the first line of an error body, trimmed and bounded, for
// an error message.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// redact hides the query of a URL (it carries the boot token) in messages
// printed on the console and sent to kiln.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.RawQuery == "" {
		return s
	}
	u.RawQuery = "..."
	return u.String()
}

// scrub redacts the URL that net/http puts in its errors.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redact(ue.URL), Err: ue.Err}
	}
	return err
}
