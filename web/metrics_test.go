package web

import (
	"bytes"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kiln-dev/kiln/metrics"
)

// TestMetricsEndpoint serves GET /metrics from a server with
// Config.Metrics and checks that requests are counted by route template,
// never by raw path.
func TestMetricsEndpoint(t *testing.T) {
	mx := metrics.New()
	e := newEnv(t, func(c *Config) { c.Metrics = mx })
	e.addMachine(testMAC, testHostname, e.image)
	kernel, _ := e.man.Artifact("kernel")

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/boot/" + testMAC + ".ipxe", http.StatusOK},
		{http.MethodGet, "/boot/52:54:00:00:00:07.ipxe", http.StatusOK}, // unknown: a halt script
		{http.MethodHead, "/boot/" + testMAC + ".ipxe", http.StatusOK},
		{http.MethodGet, "/blobs/" + string(kernel.Digest) + "?mac=" + testMAC, http.StatusOK},
		{http.MethodGet, "/api/v1/machines/" + testMAC + "/timeline", http.StatusOK},
		{http.MethodGet, "/api/v1/machines/nope", http.StatusBadRequest},
		{http.MethodGet, "/no/such/page", http.StatusNotFound},
		{http.MethodGet, "/another/missing/page", http.StatusNotFound},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed},
	} {
		resp, body := e.do(tc.method, tc.path, nil, "")
		wantStatus(t, resp, body, tc.status)
	}
	// A blob through the middleware is whole.
	resp, body := e.get("/blobs/" + string(kernel.Digest))
	wantStatus(t, resp, body, http.StatusOK)
	if !bytes.Equal(body, testKernel) {
		t.Errorf("GET kernel blob through the metrics middleware = %q, want %q", body, testKernel)
	}

	resp, body = e.get("/metrics")
	wantStatus(t, resp, body, http.StatusOK)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	got := map[string]float64{}
	for _, m := range fams["kiln_http_requests_total"].GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		got[strings.Join(ls, ",")] = m.GetCounter().GetValue()
	}
	// /metrics itself is counted once the reply is written, so not in
	// its own first scrape.
	want := map[string]float64{
		"code=200,method=get,route=/boot/{mac}.ipxe":                2,
		"code=200,method=head,route=/boot/{mac}.ipxe":               1,
		"code=200,method=get,route=/blobs/{digest}":                 2,
		"code=200,method=get,route=/api/v1/machines/{mac}/timeline": 1,
		"code=400,method=get,route=/api/v1/machines/{mac}":          1,
		"code=404,method=get,route=unmatched":                       2,
		"code=405,method=delete,route=method_not_allowed":           1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kiln_http_requests_total (-want +got):\n%s", diff)
	}
	if strings.Contains(string(body), testMAC) || strings.Contains(string(body), "no/such") {
		t.Errorf("/metrics carries a raw path:\n%s", body)
	}
	if fams["kiln_http_request_seconds"] == nil || fams["go_goroutines"] == nil {
		t.Errorf("/metrics lacks the request histogram or the Go collector")
	}

	// Without Config.Metrics there is no /metrics.
	plain := newEnv(t)
	resp, body = plain.get("/metrics")
	wantStatus(t, resp, body, http.StatusNotFound)
}
