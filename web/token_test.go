package web

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

var tokenInScript = regexp.MustCompile(`kiln\.identity=\S+/identity/([0-9a-f:]+)\?token=([A-Za-z0-9_-]+)`)

// boot fetches mac's boot script, which starts a boot, and returns the
// token the script carries.
func (e *env) boot(mac string) string {
	e.t.Helper()
	resp, body := e.get("/boot/" + mac + ".ipxe")
	wantStatus(e.t, resp, body, http.StatusOK)
	m := tokenInScript.FindStringSubmatch(string(body))
	if m == nil {
		e.t.Fatalf("boot script of %s carries no token:\n%s", mac, body)
	}
	if m[1] != mac {
		e.t.Fatalf("boot script of %s points at the identity of %s", mac, m[1])
	}
	return m[2]
}

func phoneHomeForm(token string) (string, string) {
	return "/phone-home/" + testMAC + "?token=" + url.QueryEscape(token), "inputs=" + url.QueryEscape(string(testInputs))
}

// TestTokens checks who may read an identity and phone home: only the
// machine's own boot in progress, by its token; never by MAC alone, with
// another machine's token, a replayed one or an expired one.
func TestTokens(t *testing.T) {
	const macB = "52:54:00:00:00:0b"
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	e.addMachine(macB, "node-b", e.image)

	tokA := e.boot(testMAC)
	tokB := e.boot(macB)
	if tokA == tokB {
		t.Fatalf("two machines got the same token %q", tokA)
	}
	refused := func(path, why string) {
		t.Helper()
		resp, body := e.get(path)
		wantStatus(t, resp, body, http.StatusForbidden)
		if msg := errorMessage(t, body); !strings.Contains(msg, why) {
			t.Errorf("GET %s: message %q does not say %q", path, msg, why)
		}
	}
	refused("/identity/"+testMAC, "no token")
	refused("/identity/"+testMAC+"?token="+tokB, "does not match")
	refused("/identity/"+macB+"?token="+tokA, "does not match")
	refused("/nocloud/"+testMAC+"/"+tokB+"/user-data", "does not match")
	// Bearer works as well as the query.
	resp, body := e.do(http.MethodGet, "/identity/"+testMAC, http.Header{"Authorization": {"Bearer " + tokA}}, "")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = e.get("/identity/" + testMAC + "?token=" + tokA + "&format=env")
	wantStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), "KILN_HOSTNAME='"+testHostname+"'") {
		t.Errorf("identity env of A = %q", body)
	}

	// A's phone-home with B's token is refused and changes nothing.
	path, form := phoneHomeForm(tokB)
	resp, body = e.do(http.MethodPost, path, formHeader, form)
	wantStatus(t, resp, body, http.StatusForbidden)
	if m := e.machine(testMAC); m.State != fleet.Booting {
		t.Errorf("after a refused phone-home A is %s, want booting", m.State)
	}
	path, form = phoneHomeForm(tokA)
	resp, body = e.do(http.MethodPost, path, formHeader, form)
	wantStatus(t, resp, body, http.StatusOK)
	if m := e.machine(testMAC); m.State != fleet.Ready {
		t.Fatalf("after phone-home A is %s, want ready", m.State)
	}
	// Ready ends the boot: the token is dead for every use.
	refused("/identity/"+testMAC+"?token="+tokA, "no boot in progress")
	refused("/nocloud/"+testMAC+"/"+tokA+"/meta-data", "no boot in progress")
	resp, body = e.do(http.MethodPost, path, formHeader, form)
	wantStatus(t, resp, body, http.StatusForbidden)

	// A new boot kills the previous boot's token.
	old := tokB
	tokB2 := e.boot(macB)
	refused("/identity/"+macB+"?token="+old, "does not match")
	resp, body = e.get("/identity/" + macB + "?token=" + tokB2)
	wantStatus(t, resp, body, http.StatusOK)
}

func TestTokenExpires(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	tok := e.boot(testMAC)
	e.advance(fleet.DefaultBootTimeout + 1)
	resp, body := e.get("/identity/" + testMAC + "?token=" + tok)
	wantStatus(t, resp, body, http.StatusForbidden)
	if msg := errorMessage(t, body); !strings.Contains(msg, "expired") {
		t.Errorf("message %q does not say expired", msg)
	}
}

// TestNoCloud serves the NoCloud seed a booting machine's cloud-init reads
// from the URL on its command line.
func TestNoCloud(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	resp, script := e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, script, http.StatusOK)
	ds := regexp.MustCompile(`ds=nocloud-net;s=(\S+)`).FindStringSubmatch(string(script))
	if ds == nil {
		t.Fatalf("boot script has no ds=nocloud-net:\n%s", script)
	}
	seed, err := url.Parse(ds[1])
	if err != nil {
		t.Fatal(err)
	}
	m := e.machine(testMAC)
	for file, want := range map[string]string{
		"meta-data":      "instance-id: " + m.MachineID + "-g1",
		"user-data":      "#cloud-config",
		"network-config": "version: 2",
		"vendor-data":    "",
	} {
		resp, body := e.get(seed.Path + file)
		wantStatus(t, resp, body, http.StatusOK)
		if !strings.Contains(string(body), want) {
			t.Errorf("%s = %q, want it to contain %q", file, body, want)
		}
	}
	resp, body := e.get(seed.Path + "passwd")
	wantStatus(t, resp, body, http.StatusNotFound)
}

// TestMachineLifecycleAPI drives generations through the API: replace,
// reimage, rollback, retire, audit with the actor, and no PATCH.
func TestMachineLifecycleAPI(t *testing.T) {
	e := newEnv(t)
	img2 := e.publish(imagesManifestNamed(e, "second"))
	actor := http.Header{"Content-Type": {"application/json"}, "X-Kiln-Actor": {"alice@ops"}}
	resp, body := e.do(http.MethodPost, "/api/v1/machines", actor, `{"mac":"`+testMAC+`","hostname":"`+testHostname+`","image":"`+string(e.image)+`","mode":"install","identity":{"domain":"rack1.example","dns":["10.0.0.53"]}}`)
	wantStatus(t, resp, body, http.StatusCreated)

	resp, body = e.do(http.MethodPatch, "/api/v1/machines/"+testMAC, actor, `{"image":"x"}`)
	wantStatus(t, resp, body, http.StatusMethodNotAllowed)
	if msg := errorMessage(t, body); !strings.Contains(msg, "never patched") {
		t.Errorf("PATCH message %q", msg)
	}

	resp, body = e.do(http.MethodPut, "/api/v1/machines/"+testMAC, actor, `{"hostname":"`+testHostname+`","image":"`+string(img2)+`","mode":"install"}`)
	wantStatus(t, resp, body, http.StatusOK)
	var m fleet.Machine
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.Generation != 2 || !m.ReimagePending || m.Image != string(img2) {
		t.Errorf("after PUT: generation %d pending %v image %s", m.Generation, m.ReimagePending, m.Image)
	}
	// A PUT that names another MAC is refused, nothing written.
	resp, body = e.do(http.MethodPut, "/api/v1/machines/"+testMAC, actor, `{"mac":"52:54:00:00:00:99","hostname":"x","image":"`+string(img2)+`"}`)
	wantStatus(t, resp, body, http.StatusBadRequest)
	// Image-only fields in an identity are refused with "put it in the image".
	resp, body = e.do(http.MethodPut, "/api/v1/machines/"+testMAC, actor, `{"hostname":"`+testHostname+`","image":"`+string(img2)+`","identity":{"packages":["vim"]}}`)
	wantStatus(t, resp, body, http.StatusBadRequest)
	if msg := errorMessage(t, body); !strings.Contains(msg, "put it in the image") {
		t.Errorf("identity with packages: message %q", msg)
	}
	if got := e.machine(testMAC).Generation; got != 2 {
		t.Errorf("refused requests changed the generation to %d", got)
	}

	resp, body = e.do(http.MethodPost, "/api/v1/machines/"+testMAC+"/rollback", actor, "")
	wantStatus(t, resp, body, http.StatusOK)
	m = e.machine(testMAC)
	if m.Generation != 3 || m.Image != string(e.image) {
		t.Errorf("after rollback: generation %d image %s, want 3 and %s", m.Generation, m.Image, e.image)
	}
	resp, body = e.do(http.MethodPost, "/api/v1/machines/"+testMAC+"/reimage", nil, "")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = e.do(http.MethodPost, "/api/v1/machines/"+testMAC+"/retire", actor, "")
	wantStatus(t, resp, body, http.StatusOK)
	m = e.machine(testMAC)
	if m.State != fleet.Retired {
		t.Errorf("after retire: state %s", m.State)
	}
	var ops []string
	for _, a := range m.Audit {
		ops = append(ops, a.Op+" "+a.Actor)
	}
	want := "create alice@ops|replace alice@ops|rollback alice@ops|reimage remote 127.0.0.1|retire alice@ops"
	if got := strings.Join(ops, "|"); !auditMatches(got, want) {
		t.Errorf("audit = %q, want %q (ports aside)", got, want)
	}
	// A retired machine boots nothing.
	resp, body = e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), "boots nothing") || strings.Contains(string(body), "kernel ") {
		t.Errorf("boot script of a retired machine:\n%s", body)
	}
}

// auditMatches compares audit lines, ignoring the peer's port.
func auditMatches(got, want string) bool {
	return regexp.MustCompile(`(remote 127\.0\.0\.1):\d+`).ReplaceAllString(got, "$1") == want
}

// imagesManifestNamed publishes another image like e's, with another name.
func imagesManifestNamed(e *env, name string) images.Manifest {
	m := e.man
	m.Name = name
	return m
}

// TestLogHidesTokens: request paths and queries are logged without the
// boot's token.
func TestLogHidesTokens(t *testing.T) {
	for _, tc := range []struct{ target, path, query string }{
		{"/identity/" + testMAC + "?token=SECRET&format=env", "/identity/" + testMAC, "format=env&token=-"},
		{"/nocloud/" + testMAC + "/SECRET/user-data", "/nocloud/" + testMAC + "/-/user-data", ""},
		{"/blobs/sha256:00?mac=" + testMAC, "/blobs/sha256:00", "mac=" + testMAC},
	} {
		r, err := http.NewRequest(http.MethodGet, "http://kiln"+tc.target, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p, q := logPath(r), logQuery(r); p != tc.path || q != tc.query || strings.Contains(p+q, "SECRET") {
			t.Errorf("%s: logged path %q query %q, want %q %q", tc.target, p, q, tc.path, tc.query)
		}
	}
}
