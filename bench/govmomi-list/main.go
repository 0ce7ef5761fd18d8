// Command govmomi-list is the baseline of bench/live-inventory.ts: VMware's
// own Go client (govmomi) listing every VirtualMachine of a vCenter with the
// property paths the gateway reads (VM_LIST_SPEC and VM_DETAIL_SPEC of
// src/datasources/vsphere/mapping.ts), through a ContainerView, plus the
// names of hosts, datastores and networks a dashboard shows beside each VM.
//
// Each run logs in, reads, joins and logs out; it prints one JSON line per
// run: {"run": i, "vms": count, "ms": elapsed}. Built offline from Debian's
// govmomi sources, as the simulator is (see scripts/setup.sh).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The gateway's VM_LIST_SPEC and VM_DETAIL_SPEC paths, in its order.
var vmPaths = []string{
	"name", "config.uuid", "config.template", "runtime.powerState", "runtime.connectionState", "runtime.host",
	"config.hardware.numCPU", "config.hardware.numCoresPerSocket", "config.hardware.memoryMB",
	"config.hardware.device", "config.hotPlugMemoryLimit", "config.guestId", "config.guestFullName",
	"config.version", "config.annotation", "config.instanceUuid", "guest.toolsStatus",
	"guest.toolsRunningStatus", "guest.ipAddress", "guest.hostName", "guest.net", "resourcePool",
	"summary.config.vmPathName",
}

// One row of the dashboard: what the gateway's GraphQL listing returns.
type row struct {
	ID         string
	Name       string
	PowerState string
	Host       string
	MemoryMiB  int32
	Vcpus      int32
	GuestOs    string
	Datastores []string
	Networks   []string
}

func listOnce(ctx context.Context, u *url.URL, caFile string, insecure bool) (int, error) {
	sc := soap.NewClient(u, insecure)
	if caFile != "" {
		if err := sc.SetRootCAs(caFile); err != nil {
			return 0, err
		}
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return 0, err
	}
	sm := session.NewManager(vc)
	if err := sm.Login(ctx, u.User); err != nil {
		return 0, err
	}
	defer func() { _ = sm.Logout(ctx) }()

	m := view.NewManager(vc)
	v, err := m.CreateContainerView(ctx, vc.ServiceContent.RootFolder, []string{"VirtualMachine", "HostSystem", "Datastore", "Network"}, true)
	if err != nil {
		return 0, err
	}
	defer func() { _ = v.Destroy(ctx) }()

	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, vmPaths, &vms); err != nil {
		return 0, err
	}
	names := map[string]string{}
	var hosts []mo.HostSystem
	if err := v.Retrieve(ctx, []string{"HostSystem"}, []string{"name"}, &hosts); err != nil {
		return 0, err
	}
	for _, h := range hosts {
		names[h.Self.Value] = h.Name
	}
	var datastores []mo.Datastore
	if err := v.Retrieve(ctx, []string{"Datastore"}, []string{"name"}, &datastores); err != nil {
		return 0, err
	}
	for _, d := range datastores {
		names[d.Self.Value] = d.Name
	}
	// Network brings its subtypes (distributed port groups); port groups are named by key in NIC backings.
	var networks []mo.Network
	if err := v.Retrieve(ctx, []string{"Network"}, []string{"name"}, &networks); err != nil {
		return 0, err
	}
	for _, n := range networks {
		names[n.Self.Value] = n.Name
	}
	var portgroups []mo.DistributedVirtualPortgroup
	if err := v.Retrieve(ctx, []string{"DistributedVirtualPortgroup"}, []string{"config.key"}, &portgroups); err != nil {
		return 0, err
	}
	for _, pg := range portgroups {
		if pg.Config.Key != "" {
			names[pg.Config.Key] = names[pg.Self.Value]
		}
	}

	rows := make([]row, 0, len(vms))
	for _, vm := range vms {
		r := row{ID: vm.Self.Value, Name: vm.Name, PowerState: string(vm.Runtime.PowerState)}
		if vm.Runtime.Host != nil {
			r.Host = names[vm.Runtime.Host.Value]
		}
		if vm.Config != nil {
			r.MemoryMiB = vm.Config.Hardware.MemoryMB
			r.Vcpus = vm.Config.Hardware.NumCPU
			r.GuestOs = vm.Config.GuestId
			seen := map[string]bool{}
			for _, d := range vm.Config.Hardware.Device {
				switch dev := d.(type) {
				case *types.VirtualDisk:
					if b, ok := dev.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
						if ds := b.GetVirtualDeviceFileBackingInfo().Datastore; ds != nil && !seen[ds.Value] {
							seen[ds.Value] = true
							r.Datastores = append(r.Datastores, names[ds.Value])
						}
					}
				case types.BaseVirtualEthernetCard:
					switch b := dev.GetVirtualEthernetCard().Backing.(type) {
					case *types.VirtualEthernetCardNetworkBackingInfo:
						if b.Network != nil && !seen[b.Network.Value] {
							seen[b.Network.Value] = true
							r.Networks = append(r.Networks, names[b.Network.Value])
						}
					case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
						if k := b.Port.PortgroupKey; k != "" && !seen[k] {
							seen[k] = true
							r.Networks = append(r.Networks, names[k])
						}
					}
				}
			}
		}
		rows = append(rows, r)
	}
	return len(rows), nil
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
	rawURL := flag.String("url", "", "SDK URL, https://127.0.0.1:PORT/sdk")
	username := flag.String("username", "", "user name")
	password := flag.String("password", "", "password")
	caFile := flag.String("ca", "", "PEM file of the certificate to trust")
	insecure := flag.Bool("insecure", false, "skip certificate checks")
	runs := flag.Int("runs", 1, "how many times to list (each logs in afresh)")
	flag.Parse()

	u, err := url.Parse(*rawURL)
	if err != nil || *rawURL == "" {
		log.Fatalf("bad -url %q", *rawURL)
	}
	u.User = url.UserPassword(*username, *password)
	ctx := context.Background()
	enc := json.NewEncoder(os.Stdout)
	for i := 0; i < *runs; i++ {
		start := time.Now()
		n, err := listOnce(ctx, u, *caFile, *insecure)
		if err != nil {
			fmt.Fprintf(os.Stderr, "govmomi-list: %v\n", err)
			os.Exit(1)
		}
		ms := float64(time.Since(start).Microseconds()) / 1000
		_ = enc.Encode(map[string]interface{}{"run": i, "vms": n, "ms": ms, "peakRssMiB": peakRssMiB()})
	}
}
