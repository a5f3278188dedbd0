package web

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/testenv"
)

// TestCloudInitReadsKilnSeed runs Debian's real cloud-init (unpacked by
// make cloud-init, see identity's tests) with the kernel command line of a
// boot script kiln served: its NoCloudNet datasource must find kiln's seed
// URL, pass the token check and come back with the machine's instance-id,
// hostname and user-data. After the machine phoned home, the same command
// line gets nothing: the token died with the boot.
func TestCloudInitReadsKilnSeed(t *testing.T) {
	e := newEnv(t)
	m := e.addMachine(testMAC, testHostname, e.image)
	resp, script := e.get("/boot/" + testMAC + ".ipxe")
	wantStatus(t, resp, script, http.StatusOK)
	kernel := regexp.MustCompile(`(?m)^kernel \S+ (.*)$`).FindSubmatch(script)
	if kernel == nil {
		t.Fatalf("no kernel line in\n%s", script)
	}
	cmdline := "BOOT_IMAGE=/vmlinuz " + string(kernel[1])

	out, err := cloudInitNoCloud(t, cmdline)
	if err != nil {
		t.Fatalf("cloud-init NoCloudNet on kiln's command line: %v\n%s", err, out)
	}
	var got struct {
		InstanceID    string `json:"instance_id"`
		LocalHostname string `json:"local_hostname"`
		UserData      string `json:"user_data"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("cloud-init check output %q: %v", out, err)
	}
	if got.InstanceID != m.MachineID+"-g1" || got.LocalHostname != testHostname || !strings.Contains(got.UserData, "hostname: "+testHostname) {
		t.Errorf("cloud-init read instance-id %q, hostname %q, user-data %q; want %s-g1, %s and the hostname",
			got.InstanceID, got.LocalHostname, got.UserData, m.MachineID, testHostname)
	}

	token := tokenInScript.FindStringSubmatch(string(script))[2]
	path, form := phoneHomeForm(token)
	resp, body := e.do(http.MethodPost, path, formHeader, form)
	wantStatus(t, resp, body, http.StatusOK)
	if out, err := cloudInitNoCloud(t, cmdline); err == nil && strings.Contains(string(out), m.MachineID) {
		t.Errorf("after ready, cloud-init still read the identity with the boot's token: %s", out)
	}
}

// cloudInitNoCloud runs identity's cloudinit-check.py nocloud CMDLINE with
// Debian's unpacked cloud-init (testenv.CloudInit).
func cloudInitNoCloud(t *testing.T, cmdline string) ([]byte, error) {
	t.Helper()
	cmd := testenv.CloudInit(t, "..", "nocloud", cmdline)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return []byte(stderr.String()), err
	}
	return out, nil
}
