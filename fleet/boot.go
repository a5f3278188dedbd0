package fleet

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/store"
)

// BUG(kiln): A BootUKI session (a UKI served as stored, which cannot carry
// its boot's token: web serves UKIs with room for it as BootNetwork boots
// with the token on their command line) lets CheckToken accept an empty
// token once. Whoever asks first in that window passes.

// BootKind is what a boot runs.
type BootKind string

// Boot kinds.
const (
	BootNetwork BootKind = "network" // the image from the network (iPXE)
	BootInstall BootKind = "install" // kiln's installer, which writes the image to the disk
	BootDisk    BootKind = "disk"    // the installed disk
	BootUKI     BootKind = "uki"     // the image's UKI over UEFI HTTP Boot
	BootNothing BootKind = "none"    // nothing: discovered and retired machines
)

// BootSession is a machine's boot in progress, from StartBoot to its
// phone-home (Report) or its installer's report (ReportInstall).
type BootSession struct {
	Kind       BootKind  `json:"kind"`
	Generation int       `json:"generation"`
	Started    time.Time `json:"started"`
	Expires    time.Time `json:"expires"`
	// TokenHash is the SHA-256 (hex) of the session's token: stored, never
	// in the API's JSON.
	TokenHash string `json:"-"`
	// TokenUsed is set, in a BootUKI session, once the one request
	// without a token was let through.
	TokenUsed bool `json:"token_used,omitempty"`
}

// BootPlan is StartBoot's decision.
type BootPlan struct {
	Kind BootKind
	// Token is the boot's token, to pass on in the boot's URLs; empty for
	// BootDisk (the disk has its credential) and BootNothing.
	Token string
	// Machine is the record after the decision.
	Machine Machine
	// Generation is the generation the boot runs (zero for BootNothing).
	Generation Generation
}

// StartBoot decides a machine's boot when kiln serves its boot script
// (firmware BootNetwork) or its UKI (firmware BootUKI), and opens the
// boot's session, which replaces any earlier one (its token dies):
//   - unknown MAC: ErrNotFound (the caller may Discover it);
//   - discovered or retired: BootNothing, no token, nothing written;
//   - stateless, or firmware BootUKI: firmware's kind, state booting;
//   - install mode, current generation not installed: BootInstall, state
//     installing, and Installed = 0 in the same write (the disk is about to
//     be overwritten: it is not booted again until verified);
//   - install mode, current generation installed: BootDisk, state booting;
//     the session's credential is the disk's (IssueDiskToken).
//
// Every kind but BootDisk and BootNothing gets a fresh random token,
// valid until Config.BootTimeout passes or the boot ends.
func (f *Fleet) StartBoot(mac string, firmware BootKind) (BootPlan, error) {
	if firmware != BootNetwork && firmware != BootUKI {
		return BootPlan{}, fmt.Errorf("%w: boot firmware %q is not %q or %q", ErrInvalid, firmware, BootNetwork, BootUKI)
	}
	key, err := normalizeMAC(mac)
	if err != nil {
		return BootPlan{}, err
	}
	var m Machine
	if err := f.st.View(func(tx store.Tx) error {
		m, err = get(tx, key)
		return err
	}); err != nil {
		return BootPlan{}, err
	}
	if bootsNothing(m) {
		return BootPlan{Kind: BootNothing, Machine: m}, nil
	}
	var plan BootPlan
	m, err = f.modify(key, func(m *Machine) error {
		if bootsNothing(*m) {
			plan = BootPlan{Kind: BootNothing}
			return errNoWrite
		}
		gen, ok := m.generation(m.Generation)
		if !ok {
			return fmt.Errorf("machine %s: current generation %d is not in its record", key, m.Generation)
		}
		now := f.now().UTC()
		kind := firmware
		if m.Mode == Install && firmware == BootNetwork {
			kind = BootDisk
			if m.Installed != m.Generation {
				kind = BootInstall
			}
		}
		s := &BootSession{Kind: kind, Generation: gen.N, Started: now, Expires: now.Add(f.bootTimeout)}
		var token string
		if kind == BootDisk {
			if m.DiskTokenGeneration == gen.N {
				s.TokenHash = m.DiskTokenHash
			}
		} else {
			token = newToken()
			s.TokenHash = hashToken(token)
		}
		if err := f.step(m, now, EventScript, gen.Image); err != nil {
			return err
		}
		switch kind {
		case BootInstall:
			if err := f.step(m, now, EventInstalling, fmt.Sprintf("generation %d: image %s", gen.N, gen.Image)); err != nil {
				return err
			}
			m.Installed, m.DiskTokenHash, m.DiskTokenGeneration = 0, "", 0
		case BootDisk:
			if err := f.step(m, now, EventDiskBoot, fmt.Sprintf("generation %d", gen.N)); err != nil {
				return err
			}
		}
		m.Boot = s
		m.updatePending()
		plan = BootPlan{Kind: kind, Token: token, Generation: gen}
		return nil
	})
	if err != nil {
		return BootPlan{}, err
	}
	plan.Machine = m
	f.log.Info("boot started", "mac", key, "boot", plan.Kind, "generation", plan.Generation.N, "image", plan.Generation.Image, "state", m.State)
	return plan, nil
}

func bootsNothing(m Machine) bool { return m.State == Discovered || m.State == Retired }

// CheckToken checks that token is the token of the machine's boot in
// progress, in constant time, and returns the machine. A refusal wraps
// ErrForbidden and says why: "unknown machine", "no token", "no boot in
// progress" (e.g. a token replayed after ready), "token does not match"
// (another machine's or an older boot's), "token of generation K, machine
// is at N" (the machine got a new generation during the boot), "token
// expired". It writes nothing, except to use up the one token-less request
// of a BootUKI session.
func (f *Fleet) CheckToken(mac, token string) (Machine, error) {
	key, err := normalizeMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	var oneShot bool
	err = f.st.View(func(tx store.Tx) error {
		if m, err = get(tx, key); err != nil {
			return err
		}
		oneShot, err = checkToken(m, token, f.now())
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return Machine{}, forbidden(key, "unknown machine")
	}
	if err != nil || !oneShot {
		return m, err
	}
	m, err = f.modify(key, func(m *Machine) error {
		oneShot, err := checkToken(*m, token, f.now())
		if err != nil {
			return err
		}
		if !oneShot {
			return errNoWrite
		}
		m.Boot.TokenUsed = true
		f.log.Info("token-less uki request let through", "mac", key, "generation", m.Boot.Generation)
		return nil
	})
	return m, err
}

// checkToken checks token against m's boot in progress at now; oneShot
// reports that it is the token-less request of a BootUKI session, which
// the caller must record as used.
func checkToken(m Machine, token string, now time.Time) (oneShot bool, err error) {
	s := m.Boot
	switch {
	case token == "" && (s == nil || s.Kind != BootUKI || s.TokenUsed):
		return false, forbidden(m.MAC, "no token")
	case s == nil || bootsNothing(m):
		return false, forbidden(m.MAC, "no boot in progress")
	case token == "":
		oneShot = true
	case s.TokenHash == "" || subtle.ConstantTimeCompare([]byte(hashToken(token)), []byte(s.TokenHash)) != 1:
		return false, forbidden(m.MAC, "token does not match")
	}
	if s.Generation != m.Generation {
		return false, forbidden(m.MAC, fmt.Sprintf("token of generation %d, machine is at %d", s.Generation, m.Generation))
	}
	if !now.Before(s.Expires) {
		return false, forbidden(m.MAC, "token expired")
	}
	return oneShot, nil
}

func forbidden(mac, reason string) error {
	return fmt.Errorf("%w: machine %s: %s", ErrForbidden, mac, reason)
}

// IssueDiskToken mints the disk credential of the machine's generation,
// for the installer to write to the disk's seed: token must be the token
// of a BootInstall session (see CheckToken). The credential is valid in
// the BootDisk sessions of that generation only (StartBoot), so not after
// a re-image, nor once a boot reported ready. A second call replaces the
// credential.
func (f *Fleet) IssueDiskToken(mac, token string) (string, error) {
	var disk string
	_, err := f.modify(mac, func(m *Machine) error {
		if _, err := checkToken(*m, token, f.now()); err != nil {
			return err
		}
		if m.Mode != Install || m.Boot.Kind != BootInstall {
			return forbidden(m.MAC, fmt.Sprintf("a disk credential needs an install boot, this boot is %s", m.Boot.Kind))
		}
		disk = newToken()
		m.DiskTokenHash, m.DiskTokenGeneration = hashToken(disk), m.Boot.Generation
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		key, _ := normalizeMAC(mac)
		return "", forbidden(key, "unknown machine")
	}
	if err != nil {
		return "", err
	}
	return disk, nil
}

// Report records a machine's phone-home: it booted the image with ID
// reported. It is allowed in state booting only. The machine becomes ready
// if reported is the image of the boot's generation (the current one for
// a boot without a session): that generation is now running. Otherwise it
// becomes failed, with the reason. Either way the boot's session ends, so
// its token is dead.
func (f *Fleet) Report(mac, reported string) (Machine, error) {
	m, err := f.modify(mac, func(m *Machine) error {
		if m.State != Booting || m.Boot != nil && m.Boot.Kind == BootInstall {
			return fmt.Errorf("machine %s: %w: phone-home in state %s (no boot in progress)", m.MAC, ErrTransition, m.State)
		}
		n := m.Generation
		if m.Boot != nil {
			n = m.Boot.Generation
		}
		want := m.Image
		if g, ok := m.generation(n); ok {
			want = g.Image
		}
		kind, detail := EventReady, reported
		if reported != want {
			kind, detail = EventFailed, fmt.Sprintf("booted image %s, assigned %s", reported, want)
		}
		if err := f.step(m, f.now().UTC(), kind, detail); err != nil {
			return err
		}
		m.ReportedImage = reported
		if kind == EventFailed {
			m.Reason = detail
		} else {
			m.Running, m.RunningImage = n, want
		}
		m.Boot = nil
		m.updatePending()
		return nil
	})
	if err == nil {
		f.log.Info("phone-home", "mac", m.MAC, "image", reported, "state", m.State, "running_generation", m.Running)
	}
	return m, err
}

// ReportInstall records the installer's outcome, in state installing
// only: ok makes the machine installed with the session's generation
// verified on its disk; !ok makes it failed with reason, its disk not to
// be booted (Installed 0). Either way the session ends.
func (f *Fleet) ReportInstall(mac string, ok bool, reason string) (Machine, error) {
	return f.modify(mac, func(m *Machine) error {
		if m.State != Installing || m.Boot == nil || m.Boot.Kind != BootInstall {
			return fmt.Errorf("machine %s: %w: install report in state %s (no install in progress)", m.MAC, ErrTransition, m.State)
		}
		n := m.Boot.Generation
		now := f.now().UTC()
		if ok {
			if err := f.step(m, now, EventInstalled, fmt.Sprintf("generation %d", n)); err != nil {
				return err
			}
			m.Installed = n
		} else {
			if reason == "" {
				reason = "no reason given"
			}
			detail := fmt.Sprintf("install of generation %d failed: %s", n, reason)
			if err := f.step(m, now, EventFailed, detail); err != nil {
				return err
			}
			m.Reason = detail
			m.Installed, m.DiskTokenHash, m.DiskTokenGeneration = 0, "", 0
		}
		m.Boot = nil
		m.updatePending()
		f.log.Info("install report", "mac", m.MAC, "ok", ok, "generation", n, "reason", reason)
		return nil
	})
}

// newToken returns 32 random bytes in unpadded base64url.
// TokenLen is the length of every token StartBoot mints: 32 random bytes
// in unpadded base64url.
var TokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

const tokenBytes = 32

func newToken() string {
	b := make([]byte, tokenBytes)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
