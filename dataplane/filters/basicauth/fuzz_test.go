package basicauth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// FuzzBasicAuth: no htpasswd document and no credentials make the filter
// panic; only bob/pw and carol/carol-pw of the test's document pass.
func FuzzBasicAuth(f *testing.F) {
	f.Add(htpasswd, "bob", "pw")
	f.Add("a:{SHA}x\nb", "a", "")
	f.Add("bob:$2y$04$", "bob", "pw")
	f.Fuzz(func(t *testing.T, users, name, password string) {
		if _, err := compile(users, "", ""); err != nil {
			users = htpasswd
		}
		c, err := compile(users, "x-user", "")
		if err != nil {
			t.Fatal(err)
		}
		fl := &filter{name: "b", cfg: c, denied: new(httpfilter.Stats).Counters(StatDenied), requests: new(httpfilter.Stats).Counters(httpfilter.StatConsumerRequests), logger: nil}
		fl.logger = discard()
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(name, password)
		ok := false
		fl.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) { ok = true })).ServeHTTP(httptest.NewRecorder(), r, nil)
		if ok && users == htpasswd && !(name == "bob" && password == "pw") && !(name == "carol" && password == "carol-pw") {
			t.Fatalf("accepted %q/%q", name, password)
		}
	})
}
