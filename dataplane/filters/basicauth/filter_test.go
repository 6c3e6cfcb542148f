package basicauth

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	basicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// htpasswd: bob/pw with bcrypt (cost 4), carol/carol-pw with {SHA}.
const htpasswd = "bob:$2a$04$dtDjAYmQA4BCqO9/Cr/MKuzcOu9.c0HM9Nf3GoVUQoVLCK1JgHl0K\ncarol:{SHA}hsAaMBat8aKiQgxhKhAqvbXOPbw=\n"

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	f, err := newFilter("basic", &basicv3.BasicAuth{
		Users:                 &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: htpasswd}},
		ForwardUsernameHeader: "x-user",
	}, httpfilter.Env{Stats: new(httpfilter.Stats)})
	if err != nil {
		t.Fatal(err)
	}
	var seen *http.Request
	h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) { seen = r }))
	for _, tc := range []struct {
		name, user, password string
		set                  bool
		want                 int
	}{
		{"bcrypt", "bob", "pw", true, 200},
		{"sha", "carol", "carol-pw", true, 200},
		{"wrong password", "bob", "nope", true, 401},
		{"unknown user", "dave", "pw", true, 401},
		{"none", "", "", false, 401},
	} {
		seen = nil
		r := httptest.NewRequest("GET", "/", nil)
		if tc.set {
			r.SetBasicAuth(tc.user, tc.password)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r, nil)
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, w.Code, tc.want)
			continue
		}
		if tc.want == 401 {
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic realm=") {
				t.Errorf("%s: WWW-Authenticate %q", tc.name, w.Header().Get("WWW-Authenticate"))
			}
			continue
		}
		if httpfilter.Principal(seen.Context()) != tc.user || seen.Header.Get("X-User") != tc.user {
			t.Errorf("%s: principal %q, X-User %q", tc.name, httpfilter.Principal(seen.Context()), seen.Header.Get("X-User"))
		}
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for _, users := range []string{"", "bob", "bob:plain", "bob:$2a$04$x", "bob:{SHA}AAAA", "bob:$2a$13$dtDjAYmQA4BCqO9/Cr/MKuzcOu9.c0HM9Nf3GoVUQoVLCK1JgHl0K"} {
		if _, err := compile(users, "", ""); err == nil {
			t.Errorf("compile(%q) succeeded", users)
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
