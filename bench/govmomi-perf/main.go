// Command govmomi-perf is the baseline of bench/metrics-sampling.ts: VMware's
// own Go client (govmomi) making the one call a metrics sampling needs, a
// QueryPerf of the realtime interval (intervalId 20, maxSample 1) for every
// VM and host at once, with the counters the gateway asks for.
//
// It logs in once and resolves the counters' keys by name once (the
// perfCounter property, through govmomi's performance package), untimed.
// Each run is then exactly one QueryPerf (methods.QueryPerf, decoded into
// govmomi's types) and prints one JSON line: {"run": i, "ms": elapsed,
// "cpuMs": this process's CPU time meanwhile, "entities": answered,
// "series": series, "peakRssMiB": VmHWM}. With -runs=0 it makes one run per
// line read from standard input (so a caller can alternate it with its own
// measurements) until standard input closes.
// Built offline from Debian's govmomi sources, as the simulator is (see
// scripts/setup.sh).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/performance"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The counters the gateway samples, copied from FIELD_COUNTERS and
// RAW_COUNTERS of src/datasources/vsphere/metrics.ts (in that order). The
// gateway also checks each field counter's unit; the bench checks that both
// sides end up with the same number of counters.
var counterNames = []string{
	// FIELD_COUNTERS
	"cpu.usage.average",
	"cpu.ready.summation",
	"mem.consumed.average",
	"mem.usage.average",
	"disk.read.average",
	"disk.write.average",
	"disk.numberReadAveraged.average",
	"disk.numberWriteAveraged.average",
	"net.received.average",
	"net.transmitted.average",
	// RAW_COUNTERS
	"cpu.usagemhz.average",
	"cpu.costop.summation",
	"cpu.latency.average",
	"mem.active.average",
	"mem.granted.average",
	"mem.vmmemctl.average",
	"mem.swapped.average",
	"disk.usage.average",
	"disk.maxTotalLatency.latest",
	"net.usage.average",
}

// readEntities reads "Type:moref" lines (VirtualMachine:vm-42, HostSystem:host-21).
func readEntities(file string) ([]types.ManagedObjectReference, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var refs []types.ManagedObjectReference
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 2)
		if len(parts) != 2 {
			return nil, fmt.Errorf("bad entity line %q", line)
		}
		refs = append(refs, types.ManagedObjectReference{Type: parts[0], Value: parts[1]})
	}
	return refs, nil
}

// cpuMs is the CPU time this process has used so far (user and system, every thread), in ms.
func cpuMs() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

// peakRssMiB is this process's resident memory at its peak so far (VmHWM), in MiB.
func peakRssMiB() float64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "VmHWM:"), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

func main() {
	rawURL := flag.String("url", "", "SDK URL, https://127.0.0.1:PORT/sdk (http:// through a proxy)")
	username := flag.String("username", "", "user name")
	password := flag.String("password", "", "password")
	caFile := flag.String("ca", "", "PEM file of the certificate to trust")
	insecure := flag.Bool("insecure", false, "skip certificate checks")
	entitiesFile := flag.String("entities", "", "file of Type:moref lines, the entities to sample")
	runs := flag.Int("runs", 1, "QueryPerf calls to make back to back; 0: one per line of standard input")
	flag.Parse()

	u, err := url.Parse(*rawURL)
	if err != nil || *rawURL == "" {
		log.Fatalf("bad -url %q", *rawURL)
	}
	u.User = url.UserPassword(*username, *password)
	entities, err := readEntities(*entitiesFile)
	if err != nil {
		log.Fatalf("govmomi-perf: %v", err)
	}
	ctx := context.Background()

	// Once: log in and look the counters up by name.
	sc := soap.NewClient(u, *insecure)
	if *caFile != "" {
		if err := sc.SetRootCAs(*caFile); err != nil {
			log.Fatalf("govmomi-perf: %v", err)
		}
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		log.Fatalf("govmomi-perf: %v", err)
	}
	sm := session.NewManager(vc)
	if err := sm.Login(ctx, u.User); err != nil {
		log.Fatalf("govmomi-perf: %v", err)
	}
	defer func() { _ = sm.Logout(ctx) }()
	if vc.ServiceContent.PerfManager == nil {
		log.Fatalf("govmomi-perf: the endpoint has no PerformanceManager")
	}
	perfManager := *vc.ServiceContent.PerfManager
	info, err := performance.NewManager(vc).CounterInfoByName(ctx)
	if err != nil {
		log.Fatalf("govmomi-perf: %v", err)
	}
	var ids []types.PerfMetricId
	for _, name := range counterNames {
		if c, ok := info[name]; ok {
			ids = append(ids, types.PerfMetricId{CounterId: c.Key, Instance: ""})
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].CounterId < ids[j].CounterId })
	specs := make([]types.PerfQuerySpec, len(entities))
	for i, e := range entities {
		specs[i] = types.PerfQuerySpec{Entity: e, MaxSample: 1, MetricId: ids, IntervalId: 20}
	}
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(map[string]interface{}{"ready": true, "counters": len(ids), "entities": len(entities)})

	// Each run: exactly one QueryPerf, decoded.
	run := func(i int) {
		cpu := cpuMs()
		start := time.Now()
		res, err := methods.QueryPerf(ctx, vc, &types.QueryPerf{This: perfManager, QuerySpec: specs})
		if err != nil {
			fmt.Fprintf(os.Stderr, "govmomi-perf: %v\n", err)
			os.Exit(1)
		}
		ms := float64(time.Since(start).Microseconds()) / 1000
		cpu = cpuMs() - cpu
		series := 0
		for _, m := range res.Returnval {
			if em, ok := m.(*types.PerfEntityMetric); ok {
				series += len(em.Value)
			}
		}
		_ = enc.Encode(map[string]interface{}{
			"run": i, "ms": ms, "cpuMs": cpu, "entities": len(res.Returnval), "series": series, "peakRssMiB": peakRssMiB(),
		})
	}
	if *runs > 0 {
		for i := 0; i < *runs; i++ {
			run(i)
		}
		return
	}
	in := bufio.NewScanner(os.Stdin)
	for i := 0; in.Scan(); i++ {
		run(i)
	}
}
