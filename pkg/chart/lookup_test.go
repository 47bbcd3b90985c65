package chart

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// fakeCluster answers the chart's `lookup` from a fake dynamic client.
type fakeCluster struct {
	client *dynamicfake.FakeDynamicClient
}

func (f fakeCluster) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, false, err
	}
	return f.client.Resource(gv.WithResource(strings.ToLower(kind) + "s")), true, nil
}

// An upgrade keeps the cluster's key: nodes with different keys could not
// talk to each other while the DaemonSet rolls.
func TestSecretKeptAcrossUpgrades(t *testing.T) {
	key := strings.Repeat("5a", 32)
	existing := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "shoal-p2p", Namespace: namespace},
		Data:       map[string][]byte{"key": []byte(key)},
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	provider := fakeCluster{dynamicfake.NewSimpleDynamicClient(scheme, existing)}
	r, err := renderValues(t, nil, provider)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(get[*corev1.Secret](t, r, "Secret", "shoal-p2p").Data["key"]); got != key {
		t.Fatalf("key %q after upgrade, want the existing %q", got, key)
	}

	// No Secret yet (first install): a new random key.
	r, err = renderValues(t, nil, fakeCluster{dynamicfake.NewSimpleDynamicClient(scheme)})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(get[*corev1.Secret](t, r, "Secret", "shoal-p2p").Data["key"]); got == key || len(got) != 64 {
		t.Fatalf("first install key %q", got)
	}
}
