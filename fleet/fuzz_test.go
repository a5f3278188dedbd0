package fleet

import (
	"encoding/json"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kiln-dev/kiln/identity"
)

// FuzzCheckToken presents arbitrary tokens for two machines in a boot: a
// token opens a machine if and only if it is that machine's boot token,
// never its hash, never the other machine's, and checking writes nothing.
func FuzzCheckToken(f *testing.F) {
	h := newHarness(f)
	h.must(h.f.Create(NewMachine{MAC: macA, Hostname: "a", Image: "sha256:a"}, ""))
	h.must(h.f.Create(NewMachine{MAC: macB, Hostname: "b", Image: "sha256:b"}, ""))
	ta, tb := h.boot(macA, BootNetwork).Token, h.boot(macB, BootNetwork).Token
	before := h.snapshot()
	f.Add(ta)
	f.Add(tb)
	f.Add(hashToken(ta))
	f.Add(ta + "=")
	f.Add(ta[:42])
	f.Add(" " + ta)
	f.Add(ta + "\x00")
	f.Fuzz(func(t *testing.T, token string) {
		for _, c := range []struct{ mac, token string }{{macA, ta}, {macB, tb}} {
			m, err := h.f.CheckToken(c.mac, token)
			switch {
			case token == c.token && err != nil:
				t.Fatalf("CheckToken(%s, its token) = %v", c.mac, err)
			case token == c.token && m.MAC != c.mac:
				t.Fatalf("CheckToken(%s) returned machine %s", c.mac, m.MAC)
			case token != c.token && !errors.Is(err, ErrForbidden):
				t.Fatalf("CheckToken(%s, %q) = %v, want ErrForbidden", c.mac, token, err)
			}
		}
		if after, err := snapshot(h.st); err != nil || !maps.Equal(before, after) {
			t.Fatalf("CheckToken(%q) wrote to the store (%v)", token, err)
		}
	})
}

// FuzzNewMachineJSON decodes arbitrary JSON as a NewMachine. A key in
// "identity" that is not an identity field is always refused; an accepted
// NewMachine survives a round trip, and when it makes a valid generation,
// that generation's identity passes identity.Decode, the strict decoder
// machines' identities are held to.
func FuzzNewMachineJSON(f *testing.F) {
	f.Add([]byte(`{"mac":"52:54:00:00:00:0a","hostname":"n1","image":"sha256:a"}`))
	f.Add([]byte(`{"mac":"52:54:00:00:00:0a","hostname":"n1","image":"sha256:a","mode":"install","identity":{"domain":"lab","addresses":["10.0.0.5/24"],"gateway":"10.0.0.1","dns":["10.0.0.1"],"labels":{"rack":"r1"},"macs":["52:54:00:00:00:0b"]}}`))
	f.Add([]byte(`{"identity":{"packages":["vim"]}}`))
	f.Add([]byte(`{"identity":null,"mac":null}`))
	f.Add([]byte(`null`))
	fl := &Fleet{now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
	f.Fuzz(func(t *testing.T, data []byte) {
		var nm NewMachine
		err := json.Unmarshal(data, &nm)
		var raw struct {
			Identity map[string]json.RawMessage `json:"identity"`
		}
		if json.Unmarshal(data, &raw) == nil {
			for k := range raw.Identity {
				if !identityFields[k] && err == nil {
					t.Fatalf("Unmarshal(%s) accepted identity key %q", data, k)
				}
			}
		}
		if err != nil {
			return
		}
		b, err := json.Marshal(nm)
		if err != nil {
			t.Fatalf("Marshal(%+v) = %v", nm, err)
		}
		var again NewMachine
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("Unmarshal(Marshal(%+v)) = %v (%s)", nm, err, b)
		}
		if diff := cmp.Diff(nm, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %s (-first +second):\n%s", data, diff)
		}
		mac, err := identity.NormalizeMAC(nm.MAC)
		if err != nil {
			return
		}
		g, err := fl.newGeneration(mac, nm, nm.Hostname, nm.Image, "0123456789abcdef0123456789abcdef", 1, "create")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("newGeneration(%+v) = %v, want ErrInvalid", nm, err)
			}
			return
		}
		js, err := g.Identity.JSON()
		if err != nil {
			t.Fatal(err)
		}
		id, err := identity.Decode(js)
		if err != nil {
			t.Fatalf("identity.Decode of generation identity %s = %v", js, err)
		}
		if diff := cmp.Diff(g.Identity, id, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("identity round trip (-stored +decoded):\n%s", diff)
		}
	})
}
