package fleet

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-dev/kiln/store"
)

// refused fails the test unless err is an ErrForbidden whose text has
// reason.
func refused(t *testing.T, what string, err error, reason string) {
	t.Helper()
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), reason) {
		t.Errorf("%s = %v, want ErrForbidden %q", what, err, reason)
	}
}

func TestTokens(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "a", Image: "sha256:a"}, ""))
	h.must(h.f.Create(NewMachine{MAC: macB, Hostname: "b", Image: "sha256:b"}, ""))
	pa, pb := h.boot(macA, BootNetwork), h.boot(macB, BootNetwork)
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(pa.Token) || pa.Token == pb.Token {
		t.Fatalf("tokens %q, %q: want two different 32-byte base64url tokens", pa.Token, pb.Token)
	}
	if m, err := h.f.CheckToken(macA, pa.Token); err != nil || m.MAC != macA {
		t.Fatalf("CheckToken(A, A's) = %v, %v", m.MAC, err)
	}
	before := h.snapshot()
	_, err := h.f.CheckToken(macB, pa.Token)
	refused(t, "CheckToken(B, A's token)", err, "token does not match")
	_, err = h.f.CheckToken(macA, "")
	refused(t, "CheckToken(A, no token)", err, "no token")
	_, err = h.f.CheckToken(macA, pa.Token[:42])
	refused(t, "CheckToken(A, cut token)", err, "token does not match")
	_, err = h.f.CheckToken("52:54:00:00:00:99", pa.Token)
	refused(t, "CheckToken(unknown)", err, "unknown machine")
	h.unchanged(before, "CheckToken")

	// The token is stored only as its hash, which the API's JSON never shows.
	raw := h.snapshot()[macA]
	api, _ := json.Marshal(h.get(macA))
	if strings.Contains(raw, pa.Token) || !strings.Contains(raw, hashToken(pa.Token)) {
		t.Errorf("stored record %s: want the token's hash and not the token", raw)
	}
	if strings.Contains(string(api), hashToken(pa.Token)) || strings.Contains(string(api), "hash") {
		t.Errorf("API JSON %s shows the token's hash", api)
	}

	// A second boot kills the first boot's token.
	pa2 := h.boot(macA, BootNetwork)
	_, err = h.f.CheckToken(macA, pa.Token)
	refused(t, "CheckToken(A, first boot's token)", err, "token does not match")
	h.must(h.f.CheckToken(macA, pa2.Token))

	// Ready ends the boot: a replay fails.
	h.must(h.f.Report(macA, "sha256:a"))
	_, err = h.f.CheckToken(macA, pa2.Token)
	refused(t, "CheckToken(A) after ready", err, "no boot in progress")
	if _, err := h.f.Report(macA, "sha256:a"); !errors.Is(err, ErrTransition) {
		t.Errorf("second Report = %v, want ErrTransition", err)
	}

	// Expiry, with the injected clock.
	pa3 := h.boot(macA, BootNetwork)
	h.advance(10*time.Minute - time.Second)
	h.must(h.f.CheckToken(macA, pa3.Token))
	h.advance(time.Second)
	_, err = h.f.CheckToken(macA, pa3.Token)
	refused(t, "CheckToken after BootTimeout", err, "token expired")

	// A new generation during the boot: its token is of the old one.
	pa4 := h.boot(macA, BootNetwork)
	h.must(h.f.Reimage(macA, ""))
	_, err = h.f.CheckToken(macA, pa4.Token)
	refused(t, "CheckToken after a reimage", err, "token of generation 1, machine is at 2")

	// A failed boot ends the session too.
	pb2 := h.boot(macB, BootNetwork)
	h.must(h.f.Report(macB, "sha256:other"))
	_, err = h.f.CheckToken(macB, pb2.Token)
	refused(t, "CheckToken after failed", err, "no boot in progress")

	// Retired: the boot in progress is dead.
	pb3 := h.boot(macB, BootNetwork)
	h.must(h.f.Retire(macB, ""))
	_, err = h.f.CheckToken(macB, pb3.Token)
	refused(t, "CheckToken of a retired machine", err, "no boot in progress")
	if p := h.boot(macB, BootNetwork); p.Kind != BootNothing || p.Token != "" {
		t.Errorf("StartBoot(retired) = %+v, want nothing", p)
	}
	if _, err := h.f.StartBoot(macA, BootDisk); !errors.Is(err, ErrInvalid) {
		t.Errorf("StartBoot(firmware disk) = %v, want ErrInvalid", err)
	}
	if _, err := h.f.StartBoot("52:54:00:00:00:99", BootNetwork); !errors.Is(err, ErrNotFound) {
		t.Errorf("StartBoot(unknown) = %v, want ErrNotFound", err)
	}
}

// TestUKIOneShot checks that a UKI boot lets exactly one request without
// a token through, and its token still works.
func TestUKIOneShot(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "a", Image: "sha256:a", Mode: Install}, ""))
	p := h.boot(macA, BootUKI)
	if p.Kind != BootUKI || p.Machine.State != Booting || p.Token == "" {
		t.Fatalf("StartBoot(uki) = %+v, want a UKI boot with a token, even in install mode", p)
	}
	m, err := h.f.CheckToken(macA, "")
	if err != nil || !m.Boot.TokenUsed {
		t.Fatalf("first token-less CheckToken = %v, want ok and used", err)
	}
	before := h.snapshot()
	_, err = h.f.CheckToken(macA, "")
	refused(t, "second token-less CheckToken", err, "no token")
	h.must(h.f.CheckToken(macA, p.Token))
	h.unchanged(before, "CheckToken after the one shot")
	// A new UKI boot has its own shot.
	h.boot(macA, BootUKI)
	h.must(h.f.CheckToken(macA, ""))
}

// TestInstallFlow runs an install-mode machine through install, disk
// boot, ready, reimage and reinstall, with its disk credential.
func TestInstallFlow(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "a", Image: "sha256:a", Mode: Install}, ""))
	h.must(h.f.Create(NewMachine{MAC: macB, Hostname: "b", Image: "sha256:a"}, ""))

	p := h.boot(macA, BootNetwork)
	if p.Kind != BootInstall || p.Token == "" || p.Machine.State != Installing || p.Machine.Installed != 0 {
		t.Fatalf("first StartBoot = %+v", p)
	}
	// Only an install session's token gets a disk credential.
	_, err := h.f.IssueDiskToken(macA, "wrong")
	refused(t, "IssueDiskToken(wrong token)", err, "token does not match")
	pb := h.boot(macB, BootNetwork)
	_, err = h.f.IssueDiskToken(macB, pb.Token)
	refused(t, "IssueDiskToken(stateless boot)", err, "needs an install boot")
	disk, err := h.f.IssueDiskToken(macA, p.Token)
	if err != nil || disk == "" || disk == p.Token {
		t.Fatalf("IssueDiskToken = %q, %v", disk, err)
	}
	_, err = h.f.CheckToken(macA, disk)
	refused(t, "disk credential in the install session", err, "token does not match")
	if _, err := h.f.Report(macA, "sha256:a"); !errors.Is(err, ErrTransition) {
		t.Errorf("Report while installing = %v, want ErrTransition", err)
	}

	m := h.must(h.f.ReportInstall(macA, true, ""))
	if m.State != Installed || m.Installed != 1 || m.Boot != nil || !m.ReimagePending {
		t.Fatalf("after ReportInstall(ok): %s installed %d boot %+v pending %v", m.State, m.Installed, m.Boot, m.ReimagePending)
	}
	_, err = h.f.CheckToken(macA, p.Token)
	refused(t, "install token after the install", err, "no boot in progress")
	_, err = h.f.CheckToken(macA, disk)
	refused(t, "disk credential without a disk boot", err, "no boot in progress")

	p = h.boot(macA, BootNetwork)
	if p.Kind != BootDisk || p.Token != "" || p.Machine.State != Booting {
		t.Fatalf("StartBoot after the install = %+v, want the disk", p)
	}
	h.must(h.f.CheckToken(macA, disk))
	_, err = h.f.IssueDiskToken(macA, disk)
	refused(t, "IssueDiskToken in a disk boot", err, "needs an install boot")
	m = h.must(h.f.Report(macA, "sha256:a"))
	if m.State != Ready || m.Running != 1 || m.ReimagePending {
		t.Fatalf("ready from disk: %s running %d pending %v", m.State, m.Running, m.ReimagePending)
	}
	_, err = h.f.CheckToken(macA, disk)
	refused(t, "disk credential after ready", err, "no boot in progress")
	// Every disk boot of the generation takes the credential.
	h.boot(macA, BootNetwork)
	h.must(h.f.CheckToken(macA, disk))

	// A re-image forces a reinstall; the installed generation is
	// forgotten in the same write as the install boot starts.
	h.must(h.f.Reimage(macA, "op"))
	p = h.boot(macA, BootNetwork)
	if p.Kind != BootInstall || p.Generation.N != 2 {
		t.Fatalf("StartBoot after reimage = %+v, want the installer for generation 2", p)
	}
	if m := h.get(macA); m.Installed != 0 || m.State != Installing || m.DiskTokenHash != "" {
		t.Fatalf("stored after the install boot started: installed %d state %s", m.Installed, m.State)
	}
	_, err = h.f.CheckToken(macA, disk)
	refused(t, "old disk credential", err, "token does not match")
	m = h.must(h.f.ReportInstall(macA, false, "sha256 mismatch"))
	if m.State != Failed || m.Installed != 0 || !strings.Contains(m.Reason, "sha256 mismatch") {
		t.Fatalf("after ReportInstall(failed): %s installed %d reason %q", m.State, m.Installed, m.Reason)
	}
	if p := h.boot(macA, BootNetwork); p.Kind != BootInstall {
		t.Fatalf("StartBoot after a failed install = %s, want the installer again", p.Kind)
	}
	var kinds []EventKind
	for _, e := range h.get(macA).Events {
		kinds = append(kinds, e.Kind)
	}
	want := []EventKind{EventAssigned, EventScript, EventInstalling, EventInstalled, EventScript, EventDiskBoot, EventReady,
		EventScript, EventDiskBoot, EventGeneration, EventScript, EventInstalling, EventFailed, EventScript, EventInstalling}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestInstallCrash kills kiln (closes and reopens the bbolt file, with a
// new Fleet) in the middle of an install: the machine is still
// installing, its disk not bootable, and the install can be retried.
func TestInstallCrash(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "a", Image: "sha256:a", Mode: Install}, ""))
	p := h.boot(macA, BootNetwork)
	h.reopen()
	m := h.get(macA)
	if m.State != Installing || m.Installed != 0 || m.Boot == nil || m.Boot.Kind != BootInstall {
		t.Fatalf("after restart: %s installed %d boot %+v", m.State, m.Installed, m.Boot)
	}
	// The session survived: the installer may go on...
	h.must(h.f.CheckToken(macA, p.Token))
	// ...or the machine boots again and the install starts over.
	p2 := h.boot(macA, BootNetwork)
	if p2.Kind != BootInstall || p2.Token == p.Token {
		t.Fatalf("StartBoot after restart = %+v, want a new install boot", p2)
	}
	h.reopen()
	if _, err := h.f.IssueDiskToken(macA, p2.Token); err != nil {
		t.Fatal(err)
	}
	if m := h.must(h.f.ReportInstall(macA, true, "")); m.State != Installed || m.Installed != 1 {
		t.Fatalf("retried install: %s installed %d", m.State, m.Installed)
	}
	h.reopen()
	if p := h.boot(macA, BootNetwork); p.Kind != BootDisk {
		t.Fatalf("StartBoot after the retried install and a restart = %s, want the disk", p.Kind)
	}
}

// TestOldRecord puts a record of an older kiln (no generations, no
// machine ID) in the store: it reads as generation 1.
func TestOldRecord(t *testing.T) {
	h := newHarness(t)
	old := map[string]string{
		macA: `{"mac":"52:54:00:00:00:0a","hostname":"old","image":"sha256:a","state":"ready","ip":"10.0.0.9",` +
			`"reported_image":"sha256:a","created":"2026-01-02T03:04:05Z","last_seen":"2026-01-02T03:05:00Z",` +
			`"events":[{"time":"2026-01-02T03:04:05Z","kind":"assigned","detail":"sha256:a"},{"time":"2026-01-02T03:04:30Z","kind":"script"},{"time":"2026-01-02T03:05:00Z","kind":"ready","detail":"sha256:a"}]}`,
		macB: `{"mac":"52:54:00:00:00:0b","hostname":"older","image":"sha256:b","state":"booting","created":"2026-01-02T03:04:05Z","events":[]}`,
	}
	if err := h.st.Update(func(tx store.Tx) error {
		for k, v := range old {
			if err := tx.Put(bucket, k, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := h.get(macA)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := Generation{N: 1, Image: "sha256:a", Created: created, Op: "create"}
	want.Identity.Hostname, want.Identity.MAC, want.Identity.Image = "old", macA, "sha256:a"
	want.Identity.MachineID, want.Identity.Generation = m.MachineID, 1
	if diff := cmp.Diff([]Generation{want}, m.Generations); diff != "" {
		t.Errorf("old record's generations (-want +got):\n%s", diff)
	}
	if m.Generation != 1 || m.Running != 1 || m.RunningImage != "sha256:a" || m.ReimagePending || m.State != Ready ||
		!regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(m.MachineID) || m.Timeline().Outcome != BootReady {
		t.Errorf("old record = %+v", m)
	}
	if id := m.Identity(); id.IP != "10.0.0.9" || id.Generation != 1 || id.MachineID != m.MachineID {
		t.Errorf("Identity() = %+v", id)
	}
	if again := h.get(macA); again.MachineID != m.MachineID {
		t.Errorf("machine ID of an old record changes between reads: %s, %s", m.MachineID, again.MachineID)
	}
	list, err := h.f.List()
	if err != nil || len(list) != 2 || list[1].Generation != 1 || !list[1].ReimagePending {
		t.Fatalf("List() = %+v, %v", list, err)
	}
	// A boot started by an older kiln (no session) can still end.
	if m := h.must(h.f.Report(macB, "sha256:b")); m.State != Ready || m.Running != 1 {
		t.Errorf("Report of an old booting record: %s running %d", m.State, m.Running)
	}
	// And an old record takes new generations.
	m = h.must(h.f.Replace(macA, NewMachine{Image: "sha256:c"}, "op"))
	if m.Generation != 2 || len(m.Generations) != 2 || m.Running != 1 || !m.ReimagePending {
		t.Errorf("Replace of an old record: gen %d running %d pending %v", m.Generation, m.Running, m.ReimagePending)
	}
}

// TestPinnedImages checks that current, previous and running images are
// pinned, and nothing of retired or discovered machines.
func TestPinnedImages(t *testing.T) {
	h := newHarness(t)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "a", Image: "sha256:a"}, ""))
	h.boot(macA, BootNetwork)
	h.must(h.f.Report(macA, "sha256:a")) // running: a
	h.must(h.f.Replace(macA, NewMachine{Image: "sha256:b"}, ""))
	h.must(h.f.Replace(macA, NewMachine{Image: "sha256:c"}, "")) // current c, previous b
	h.must(h.f.Create(NewMachine{MAC: macB, Hostname: "b", Image: "sha256:d"}, ""))
	h.must(h.f.Retire(macB, ""))
	h.f.Discover("52:54:00:00:00:0c")
	got, err := h.f.PinnedImages()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]bool{"sha256:a": true, "sha256:b": true, "sha256:c": true}, got); diff != "" {
		t.Errorf("PinnedImages() (-want +got):\n%s", diff)
	}
	// Once c is running, a is neither current, previous nor running.
	h.boot(macA, BootNetwork)
	h.must(h.f.Report(macA, "sha256:c"))
	got, _ = h.f.PinnedImages()
	if diff := cmp.Diff(map[string]bool{"sha256:b": true, "sha256:c": true}, got); diff != "" {
		t.Errorf("PinnedImages() after c is running (-want +got):\n%s", diff)
	}
}
