package conformance

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestTranslateServiceEndpoints checks which echo backends a Service's
// endpoints are: those its selector matches, or those its EndpointSlices
// name by pod IP; headless Services alike.
func TestTranslateServiceEndpoints(t *testing.T) {
	const ns = "gateway-conformance-infra"
	v1 := &backend{pod: "infra-backend-v1-7c9d8f6b5-x0000", namespace: ns, ip: podIP(1),
		labels: map[string]string{"app": "infra-backend-v1"}, httpPort: "41001", h2cPort: "41002"}
	v2 := &backend{pod: "infra-backend-v2-7c9d8f6b5-x0000", namespace: ns, ip: podIP(2),
		labels: map[string]string{"app": "infra-backend-v2"}, httpPort: "42001", h2cPort: "42002"}
	tr := translator{backends: map[objKey]*backend{
		{kind: "Deployment", namespace: ns, name: "infra-backend-v1"}: v1,
		{kind: "Deployment", namespace: ns, name: "infra-backend-v2"}: v2,
	}}
	service := func(name string, selector map[string]string, clusterIP string, target int) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.ServiceSpec{
			Selector: selector, ClusterIP: clusterIP,
			Ports: []corev1.ServicePort{{Name: "first-port", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt(target)}},
		}}
	}
	slice := func(name, service string, port int32, ready *bool, addrs ...string) discoveryv1.EndpointSlice {
		es := discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("first-port"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for _, a := range addrs {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ready}})
		}
		return es
	}
	tests := []struct {
		name    string
		service corev1.Service
		slices  []discoveryv1.EndpointSlice
		want    []string // endpoint addresses
	}{
		{name: "selector", service: service("s", map[string]string{"app": "infra-backend-v1"}, "", 3000),
			want: []string{"127.0.0.1:41001"}},
		{name: "headless with a selector", service: service("headless", map[string]string{"app": "infra-backend-v2"}, corev1.ClusterIPNone, 3000),
			want: []string{"127.0.0.1:42001"}},
		{name: "selector: its EndpointSlices are the selector's", service: service("s", map[string]string{"app": "infra-backend-v1"}, "", 3000),
			slices: []discoveryv1.EndpointSlice{slice("s-1", "s", 3000, nil, podIP(2))},
			want:   []string{"127.0.0.1:41001"}},
		{name: "no selector, no EndpointSlice", service: service("manual", nil, "", 3000)},
		{name: "no selector: the pods its EndpointSlices name", service: service("manual", nil, "", 3000),
			slices: []discoveryv1.EndpointSlice{slice("manual-ip4", "manual", 3000, ptr.To(true), podIP(2), podIP(1)), slice("manual-ip6", "manual", 3000, nil)},
			want:   []string{"127.0.0.1:41001", "127.0.0.1:42001"}},
		{name: "headless without a selector", service: service("headless-manual", nil, corev1.ClusterIPNone, 3000),
			slices: []discoveryv1.EndpointSlice{slice("headless-manual-ip4", "headless-manual", 3000, nil, podIP(1))},
			want:   []string{"127.0.0.1:41001"}},
		{name: "the slice's port 3001 is the h2c one", service: service("manual", nil, "", 3000),
			slices: []discoveryv1.EndpointSlice{slice("manual-ip4", "manual", 3001, nil, podIP(1))},
			want:   []string{"127.0.0.1:41002"}},
		{name: "unready endpoints are left out", service: service("manual", nil, "", 3000),
			slices: []discoveryv1.EndpointSlice{slice("manual-ip4", "manual", 3000, ptr.To(false), podIP(1)), slice("manual-b", "manual", 3000, nil, podIP(2))},
			want:   []string{"127.0.0.1:42001"}},
		{name: "an IP of no pod is left out", service: service("manual", nil, "", 3000),
			slices: []discoveryv1.EndpointSlice{slice("manual-ip4", "manual", 3000, nil, "10.0.0.9", podIP(1))},
			want:   []string{"127.0.0.1:41001"}},
		{name: "another Service's slice", service: service("manual", nil, "", 3000),
			slices: []discoveryv1.EndpointSlice{slice("other-ip4", "other", 3000, nil, podIP(1))}},
		{name: "a slice without the port's name", service: service("manual", nil, "", 3000),
			slices: func() []discoveryv1.EndpointSlice {
				es := slice("manual-ip4", "manual", 3000, nil, podIP(1))
				es.Ports[0].Name = ptr.To("second-port")
				return []discoveryv1.EndpointSlice{es}
			}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tr.service(tc.service, tc.slices)["spec"].(map[string]any)
			var got []string
			if eps, ok := spec["endpoints"].([]any); ok {
				for _, ep := range eps {
					got = append(got, ep.(map[string]any)["address"].(string))
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("endpoints = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPodIP checks that pod IPs are distinct addresses of 10.244.0.0/16.
func TestPodIP(t *testing.T) {
	for n, want := range map[int]string{1: "10.244.0.1", 255: "10.244.0.255", 256: "10.244.1.0", 513: "10.244.2.1"} {
		if got := podIP(n); got != want {
			t.Errorf("podIP(%d) = %s, want %s", n, got, want)
		}
	}
}
