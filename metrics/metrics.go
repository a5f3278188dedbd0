// Package metrics holds kiln's Prometheus metrics: DHCPv4 and DHCPv6
// packets, TFTP transfers, HTTP requests, address pool usage and machine
// states, served in the Prometheus exposition format by Handler.
//
// The metrics live in a registry of their own, not in the global one, so
// that tests and several servers in one process never share counters.
// Callers pass plain values (message type, outcome, duration), so this
// package imports none of kiln's protocol packages: cmd/kiln forwards each
// server's decisions to it.
//
// Every label value that reaches a metric comes from a fixed set; anything
// else is counted as "other", so that no client can create series at will
// (see the Label functions).
package metrics

import (
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Histogram buckets, in seconds.
var (
	// dhcpBuckets span in-memory decisions (tens of µs) to replies that
	// wait for a group commit's fsync (ms to tens of ms) and stalls.
	dhcpBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}
	// tftpBuckets span an aborted size probe (ms) to a large file over a
	// slow link (minutes).
	tftpBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	// httpBuckets span a boot script (ms) to a multi-GiB blob (minutes).
	httpBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
)

// PoolUsage is the use of one address pool at scrape time.
type PoolUsage struct {
	Subnet string // e.g. "10.78.0.0/24"
	Pool   string // e.g. "10.78.0.100-10.78.0.199"
	Size   int    // addresses in the pool
	InUse  int    // addresses bound or offered, unexpired
}

// Metrics is kiln's set of metrics. Its methods are safe for concurrent
// use. A nil *Metrics records nothing, so that callers need not check.
type Metrics struct {
	reg *prometheus.Registry

	dhcpPackets  *prometheus.CounterVec   // type, outcome
	dhcpRelayed  *prometheus.CounterVec   // outcome
	dhcpSeconds  *prometheus.HistogramVec // type
	dhcp6Packets *prometheus.CounterVec
	dhcp6Relayed *prometheus.CounterVec
	dhcp6Seconds *prometheus.HistogramVec

	tftpTransfers *prometheus.CounterVec   // outcome
	tftpBytes     prometheus.Counter       //
	tftpSeconds   *prometheus.HistogramVec // outcome

	httpRequests *prometheus.CounterVec   // route, method, code
	httpSeconds  *prometheus.HistogramVec // route
	routes       labelSet                 // bounds the route label

	pools    *funcCollector
	machines *funcCollector
}

// New returns a Metrics with every kiln metric, the Go runtime's and the
// process's registered in a registry of its own.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		dhcpPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp_packets_total",
			Help: "DHCPv4 packets handled, by message type and outcome.",
		}, []string{"type", "outcome"}),
		dhcpRelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp_relayed_packets_total",
			Help: "DHCPv4 packets that came through a relay agent (giaddr set), by outcome; also counted in kiln_dhcp_packets_total.",
		}, []string{"outcome"}),
		dhcpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_dhcp_handle_seconds",
			Help:    "Time to handle one DHCPv4 packet, lease write included, by message type.",
			Buckets: dhcpBuckets,
		}, []string{"type"}),
		dhcp6Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp6_packets_total",
			Help: "DHCPv6 packets handled, by message type and outcome.",
		}, []string{"type", "outcome"}),
		dhcp6Relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp6_relayed_packets_total",
			Help: "DHCPv6 packets that came through a relay agent, by outcome; also counted in kiln_dhcp6_packets_total.",
		}, []string{"outcome"}),
		dhcp6Seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_dhcp6_handle_seconds",
			Help:    "Time to handle one DHCPv6 packet, lease write included, by message type.",
			Buckets: dhcpBuckets,
		}, []string{"type"}),
		tftpTransfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_tftp_transfers_total",
			Help: "TFTP read requests finished, by outcome.",
		}, []string{"outcome"}),
		tftpBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_tftp_bytes_total",
			Help: "File bytes handed to TFTP clients.",
		}),
		tftpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_tftp_transfer_seconds",
			Help:    "Duration of TFTP transfers, from the request to the end, by outcome.",
			Buckets: tftpBuckets,
		}, []string{"outcome"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_http_requests_total",
			Help: "HTTP requests answered, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_http_request_seconds",
			Help:    "Time to answer an HTTP request, body included, by route template.",
			Buckets: httpBuckets,
		}, []string{"route"}),
		routes: labelSet{max: maxRoutes},
	}
	m.pools = &funcCollector{collect: m.collectPools, descs: []*prometheus.Desc{poolAddressesDesc, leasesInUseDesc}}
	m.machines = &funcCollector{collect: m.collectMachines, descs: []*prometheus.Desc{machinesDesc}}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.dhcpPackets, m.dhcpRelayed, m.dhcpSeconds,
		m.dhcp6Packets, m.dhcp6Relayed, m.dhcp6Seconds,
		m.tftpTransfers, m.tftpBytes, m.tftpSeconds,
		m.httpRequests, m.httpSeconds,
		m.pools, m.machines,
	)
	return m
}

// Registry returns the registry the metrics are in, for tests and for
// callers that add metrics of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns the handler of GET /metrics: every metric in the
// Prometheus text (or negotiated OpenMetrics) exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// DHCPPacket records one DHCPv4 packet: its message type (e.g. "DISCOVER",
// or "" when unparseable), the outcome of its handling (e.g. "offered",
// "ignored"), whether a relay agent forwarded it, and how long handling
// took. Unknown types and outcomes are counted as "other".
func (m *Metrics) DHCPPacket(msgType, outcome string, relayed bool, d time.Duration) {
	if m == nil {
		return
	}
	t, o := dhcp4Types.label(msgType), dhcp4Outcomes.label(outcome)
	m.dhcpPackets.WithLabelValues(t, o).Inc()
	if relayed {
		m.dhcpRelayed.WithLabelValues(o).Inc()
	}
	m.dhcpSeconds.WithLabelValues(t).Observe(seconds(d))
}

// DHCP6Packet records one DHCPv6 packet, as DHCPPacket does for DHCPv4:
// message type (e.g. "SOLICIT"), outcome, relayed, duration.
func (m *Metrics) DHCP6Packet(msgType, outcome string, relayed bool, d time.Duration) {
	if m == nil {
		return
	}
	t, o := dhcp6Types.label(msgType), dhcp6Outcomes.label(outcome)
	m.dhcp6Packets.WithLabelValues(t, o).Inc()
	if relayed {
		m.dhcp6Relayed.WithLabelValues(o).Inc()
	}
	m.dhcp6Seconds.WithLabelValues(t).Observe(seconds(d))
}

// TFTP transfer outcomes, for TFTPTransfer.
const (
	TFTPOK           = "ok"            // the whole file was sent
	TFTPNotFound     = "not_found"     // no such file
	TFTPAccessDenied = "access_denied" // the path was refused
	TFTPBusy         = "busy"          // refused: too many transfers
	TFTPSizeProbe    = "size_probe"    // the client asked the size, then aborted (OVMF)
	TFTPError        = "error"         // the transfer failed (timeout, client error)
)

// TFTPTransfer records one finished TFTP read request: its outcome (one of
// the TFTP* constants; anything else counts as "other"), the file bytes
// handed to the client and its duration.
func (m *Metrics) TFTPTransfer(outcome string, bytes int64, d time.Duration) {
	if m == nil {
		return
	}
	o := tftpOutcomes.label(outcome)
	m.tftpTransfers.WithLabelValues(o).Inc()
	if bytes > 0 {
		m.tftpBytes.Add(float64(bytes))
	}
	m.tftpSeconds.WithLabelValues(o).Observe(seconds(d))
}

// SetPoolUsage sets the function asked for the use of every address pool
// at each scrape, replacing any earlier one; it feeds
// kiln_dhcp_pool_addresses and kiln_dhcp_leases_in_use. It MUST be safe for
// concurrent use and quick. Give one function for all servers (DHCPv4 and
// DHCPv6 pools concatenated); pools reported twice are summed.
func (m *Metrics) SetPoolUsage(fn func() []PoolUsage) {
	if m == nil {
		return
	}
	m.pools.mu.Lock()
	m.pools.poolFn = fn
	m.pools.mu.Unlock()
}

// SetMachines sets the function asked, at each scrape, for the number of
// machines in each state (e.g. {"ready": 3, "booting": 1}); it feeds
// kiln_machines. The four states of fleet are always exported, zero when
// absent; other states are summed as "other". A nil map exports zeros.
func (m *Metrics) SetMachines(fn func() map[string]int) {
	if m == nil {
		return
	}
	m.machines.mu.Lock()
	m.machines.machineFn = fn
	m.machines.mu.Unlock()
}

var (
	poolAddressesDesc = prometheus.NewDesc("kiln_dhcp_pool_addresses",
		"Addresses in each DHCP pool.", []string{"subnet", "pool"}, nil)
	leasesInUseDesc = prometheus.NewDesc("kiln_dhcp_leases_in_use",
		"Addresses of each DHCP pool that are bound or offered and unexpired.", []string{"subnet", "pool"}, nil)
	machinesDesc = prometheus.NewDesc("kiln_machines",
		"Registered machines, by lifecycle state.", []string{"state"}, nil)
)

// machineStates are the states kiln_machines always exports.
var machineStates = []string{"assigned", "booting", "ready", "failed"}

// funcCollector exports gauges computed by a callback at scrape time.
type funcCollector struct {
	descs   []*prometheus.Desc
	collect func(*funcCollector, chan<- prometheus.Metric)

	mu        sync.Mutex
	poolFn    func() []PoolUsage
	machineFn func() map[string]int
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) { c.collect(c, ch) }

func (m *Metrics) collectPools(c *funcCollector, ch chan<- prometheus.Metric) {
	c.mu.Lock()
	fn := c.poolFn
	c.mu.Unlock()
	if fn == nil {
		return
	}
	type key struct{ subnet, pool string }
	type sums struct{ size, inUse int }
	total := map[key]*sums{}
	var order []key
	for _, u := range fn() {
		k := key{u.Subnet, u.Pool}
		s := total[k]
		if s == nil {
			s = &sums{}
			total[k] = s
			order = append(order, k)
		}
		s.size += u.Size
		s.inUse += u.InUse
	}
	for _, k := range order {
		s := total[k]
		ch <- prometheus.MustNewConstMetric(poolAddressesDesc, prometheus.GaugeValue, float64(s.size), k.subnet, k.pool)
		ch <- prometheus.MustNewConstMetric(leasesInUseDesc, prometheus.GaugeValue, float64(s.inUse), k.subnet, k.pool)
	}
}

func (m *Metrics) collectMachines(c *funcCollector, ch chan<- prometheus.Metric) {
	c.mu.Lock()
	fn := c.machineFn
	c.mu.Unlock()
	if fn == nil {
		return
	}
	counts := map[string]int{}
	for _, s := range machineStates {
		counts[s] = 0
	}
	other := 0
	for state, n := range fn() {
		if _, ok := counts[state]; ok {
			counts[state] += n
		} else {
			other += n
		}
	}
	states := append([]string(nil), machineStates...)
	if other > 0 {
		counts[OtherLabel] = other
		states = append(states, OtherLabel)
	}
	sort.Strings(states)
	for _, s := range states {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(counts[s]), s)
	}
}

func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}
