package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics from a real HTTP server over m.Handler and parses
// the text exposition.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4") // the classic text format
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d:\n%s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, body)
	}
	return fams
}

// series returns, for the family name, the value of each series keyed by
// its labels as "k=v,k=v" (sorted): the counter, gauge or untyped value,
// or a histogram's sample count.
func series(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	f := fams[name]
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		var ls []string
		for _, l := range m.Label {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		k := strings.Join(ls, ",")
		switch {
		case m.Counter != nil:
			out[k] = m.Counter.GetValue()
		case m.Gauge != nil:
			out[k] = m.Gauge.GetValue()
		case m.Histogram != nil:
			out[k] = float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			out[k] = m.Untyped.GetValue()
		}
	}
	return out
}

func TestDHCPMetrics(t *testing.T) {
	m := New()
	m.DHCPPacket("DISCOVER", "offered", false, 300*time.Microsecond)
	m.DHCPPacket("DISCOVER", "offered", true, 2*time.Millisecond)
	m.DHCPPacket("REQUEST", "acked", false, 4*time.Millisecond)
	m.DHCPPacket("", "malformed", false, 10*time.Microsecond)
	m.DHCP6Packet("SOLICIT", "offered", false, time.Millisecond)
	m.DHCP6Packet("RELAY-FORW", "offered", true, time.Millisecond)
	fams := scrape(t, m)

	for _, tc := range []struct {
		name string
		want map[string]float64
	}{
		{"kiln_dhcp_packets_total", map[string]float64{
			"outcome=offered,type=discover": 2, "outcome=acked,type=request": 1, "outcome=malformed,type=none": 1,
		}},
		{"kiln_dhcp_relayed_packets_total", map[string]float64{"outcome=offered": 1}},
		{"kiln_dhcp_handle_seconds", map[string]float64{"type=discover": 2, "type=request": 1, "type=none": 1}},
		{"kiln_dhcp6_packets_total", map[string]float64{"outcome=offered,type=solicit": 1, "outcome=offered,type=relay-forw": 1}},
		{"kiln_dhcp6_relayed_packets_total", map[string]float64{"outcome=offered": 1}},
		{"kiln_dhcp6_handle_seconds", map[string]float64{"type=solicit": 1, "type=relay-forw": 1}},
	} {
		if diff := cmp.Diff(tc.want, series(fams, tc.name)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}

	// The buckets place a 300 µs decision below 500 µs and a 2 ms one above.
	h := fams["kiln_dhcp_handle_seconds"]
	for _, s := range h.Metric {
		if s.Label[0].GetValue() != "discover" {
			continue
		}
		if got := s.Histogram.GetSampleSum(); got < 0.0023 || got > 0.0024 {
			t.Errorf("discover sample sum = %v, want 0.0023", got)
		}
		for _, b := range s.Histogram.Bucket {
			want := map[float64]uint64{0.00025: 0, 0.0005: 1, 0.001: 1, 0.0025: 2}
			if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
				t.Errorf("discover bucket le=%v = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
			}
		}
	}
	// The Go and process collectors are there too.
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if fams[name] == nil {
			t.Errorf("exposition has no %s", name)
		}
	}
}

func TestTFTPMetrics(t *testing.T) {
	m := New()
	m.TFTPTransfer(TFTPOK, 1<<20, 3*time.Second)
	m.TFTPTransfer(TFTPOK, 1000, 20*time.Millisecond)
	m.TFTPTransfer(TFTPSizeProbe, 0, time.Millisecond)
	m.TFTPTransfer(TFTPBusy, -5, 0) // a negative count must not panic the counter
	fams := scrape(t, m)
	if diff := cmp.Diff(map[string]float64{"outcome=ok": 2, "outcome=size_probe": 1, "outcome=busy": 1},
		series(fams, "kiln_tftp_transfers_total")); diff != "" {
		t.Errorf("kiln_tftp_transfers_total (-want +got):\n%s", diff)
	}
	if got := series(fams, "kiln_tftp_bytes_total")[""]; got != 1<<20+1000 {
		t.Errorf("kiln_tftp_bytes_total = %v, want %v", got, 1<<20+1000)
	}
	if diff := cmp.Diff(map[string]float64{"outcome=ok": 2, "outcome=size_probe": 1, "outcome=busy": 1},
		series(fams, "kiln_tftp_transfer_seconds")); diff != "" {
		t.Errorf("kiln_tftp_transfer_seconds counts (-want +got):\n%s", diff)
	}
}

func TestPoolAndMachineGauges(t *testing.T) {
	m := New()
	fams := scrape(t, m)
	if fams["kiln_dhcp_leases_in_use"] != nil || fams["kiln_machines"] != nil {
		t.Errorf("gauges exported before their callbacks are set")
	}

	var mu sync.Mutex
	inUse := 3
	m.SetPoolUsage(func() []PoolUsage {
		mu.Lock()
		defer mu.Unlock()
		return []PoolUsage{
			{Subnet: "10.78.0.0/24", Pool: "10.78.0.100-10.78.0.199", Size: 100, InUse: inUse},
			{Subnet: "10.79.0.0/24", Pool: "10.79.0.10-10.79.0.19", Size: 10, InUse: 0},
			// The same pool twice (e.g. two servers) is summed, not a
			// scrape error.
			{Subnet: "10.79.0.0/24", Pool: "10.79.0.10-10.79.0.19", Size: 0, InUse: 2},
		}
	})
	m.SetMachines(func() map[string]int { return map[string]int{"ready": 2, "booting": 1, "weird": 4, "odd": 1} })
	fams = scrape(t, m)
	if diff := cmp.Diff(map[string]float64{
		"pool=10.78.0.100-10.78.0.199,subnet=10.78.0.0/24": 100, "pool=10.79.0.10-10.79.0.19,subnet=10.79.0.0/24": 10,
	}, series(fams, "kiln_dhcp_pool_addresses")); diff != "" {
		t.Errorf("kiln_dhcp_pool_addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{
		"pool=10.78.0.100-10.78.0.199,subnet=10.78.0.0/24": 3, "pool=10.79.0.10-10.79.0.19,subnet=10.79.0.0/24": 2,
	}, series(fams, "kiln_dhcp_leases_in_use")); diff != "" {
		t.Errorf("kiln_dhcp_leases_in_use (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{
		"state=assigned": 0, "state=booting": 1, "state=ready": 2, "state=failed": 0, "state=other": 5,
	}, series(fams, "kiln_machines")); diff != "" {
		t.Errorf("kiln_machines (-want +got):\n%s", diff)
	}

	// Computed at scrape time: a change shows in the next scrape.
	mu.Lock()
	inUse = 42
	mu.Unlock()
	if got := series(scrape(t, m), "kiln_dhcp_leases_in_use")["pool=10.78.0.100-10.78.0.199,subnet=10.78.0.0/24"]; got != 42 {
		t.Errorf("after the pool filled: kiln_dhcp_leases_in_use = %v, want 42", got)
	}
}

// TestLabelCardinality feeds label values a client controls (message types
// and outcomes of garbage packets, made-up routes and methods) and checks
// that they land in "other" instead of making a series each.
func TestLabelCardinality(t *testing.T) {
	m := New()
	for i := range 1000 {
		m.DHCPPacket(fmt.Sprintf("unknown (%d)", i), fmt.Sprintf("outcome-%d", i), i%2 == 0, time.Microsecond)
		m.DHCP6Packet(strings.Repeat("X", i), "", false, time.Microsecond)
		m.TFTPTransfer(fmt.Sprintf("weird-%d", i), 1, time.Millisecond)
	}
	// Case does not matter.
	m.DHCPPacket("discover", "OFFERED", false, 0)
	// A bad route func: the raw path.
	route := func(r *http.Request) string { return r.URL.Path }
	srv := httptest.NewServer(m.Instrument(route)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})))
	defer srv.Close()
	for i := range 200 {
		req, _ := http.NewRequest(fmt.Sprintf("M%d", i), fmt.Sprintf("%s/p/%d", srv.URL, i), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	fams := scrape(t, m)
	if diff := cmp.Diff(map[string]float64{"outcome=other,type=other": 1000, "outcome=offered,type=discover": 1},
		series(fams, "kiln_dhcp_packets_total")); diff != "" {
		t.Errorf("kiln_dhcp_packets_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"outcome=other,type=other": 999, "outcome=other,type=none": 1},
		series(fams, "kiln_dhcp6_packets_total")); diff != "" {
		t.Errorf("kiln_dhcp6_packets_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"outcome=other": 1000}, series(fams, "kiln_tftp_transfers_total")); diff != "" {
		t.Errorf("kiln_tftp_transfers_total (-want +got):\n%s", diff)
	}
	reqs := series(fams, "kiln_http_requests_total")
	if len(reqs) != maxRoutes+1 {
		t.Errorf("kiln_http_requests_total has %d series, want %d routes and other", len(reqs), maxRoutes+1)
	}
	if got := reqs["code=418,method=other,route=other"]; got != 200-maxRoutes {
		t.Errorf("requests past the route cap = %v, want %d", got, 200-maxRoutes)
	}
}

func TestInstrument(t *testing.T) {
	m := New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot/{mac}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "#!ipxe\n") })
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(io.ReaderFrom); !ok {
			http.Error(w, "writer lost io.ReaderFrom", http.StatusInternalServerError)
			return
		}
		if err := http.NewResponseController(w).Flush(); err != nil {
			http.Error(w, "writer cannot flush: "+err.Error(), http.StatusInternalServerError)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("blob bytes"))
	})
	route := func(r *http.Request) string {
		if _, pattern := mux.Handler(r); pattern != "" {
			return pattern
		}
		return "unmatched"
	}
	srv := httptest.NewServer(m.Instrument(route)(mux))
	defer srv.Close()
	for _, p := range []string{"/boot/52:54:00:00:00:01", "/boot/52:54:00:00:00:02", "/slow", "/blob", "/nope", "/nope/2"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if p == "/blob" && (resp.StatusCode != http.StatusOK || string(body) != "blob bytes") {
			t.Errorf("GET /blob = %d %q through the middleware", resp.StatusCode, body)
		}
	}
	fams := scrape(t, m)
	if diff := cmp.Diff(map[string]float64{
		"code=200,method=get,route=GET /boot/{mac}": 2,
		"code=204,method=get,route=GET /slow":       1,
		"code=200,method=get,route=GET /blob":       1,
		"code=404,method=get,route=unmatched":       2,
	}, series(fams, "kiln_http_requests_total")); diff != "" {
		t.Errorf("kiln_http_requests_total (-want +got):\n%s", diff)
	}
	for _, s := range fams["kiln_http_request_seconds"].Metric {
		if s.Label[0].GetValue() == "GET /slow" && s.Histogram.GetSampleSum() < 0.03 {
			t.Errorf("GET /slow took %vs by the histogram, want at least 0.03", s.Histogram.GetSampleSum())
		}
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.DHCPPacket("DISCOVER", "offered", false, 0)
	m.DHCP6Packet("SOLICIT", "offered", false, 0)
	m.TFTPTransfer(TFTPOK, 1, 0)
	m.SetPoolUsage(nil)
	m.SetMachines(nil)
	h := http.NotFoundHandler()
	if got := m.Instrument(func(*http.Request) string { return "" })(h); got == nil {
		t.Fatal("nil Metrics: Instrument returned nil")
	}
}

// BenchmarkDHCPPacket is the cost a DHCP storm pays per packet.
func BenchmarkDHCPPacket(b *testing.B) {
	m := New()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.DHCPPacket("DISCOVER", "offered", false, 200*time.Microsecond)
		}
	})
}
