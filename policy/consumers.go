package policy

import "strings"

// Consumer is a declared consumer: a caller a SecurityPolicy names, whose
// requests and rate-limit refusals the proxies count by name (kind and
// name are the labels of meshgate_proxy_consumer_* metrics).
type Consumer struct {
	// Kind is "apikey" (an API key consumer, of the policy or of its
	// Secret), "basic" (a basic-auth user) or "jwt" (a JWT provider's
	// consumer).
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Policy is the SecurityPolicy that declares it.
	Policy string `json:"policy"`
	// Provider and Subject: a JWT consumer's provider and sub claim.
	Provider string `json:"provider,omitempty"`
	Subject  string `json:"subject,omitempty"`
	// Secret: an API key consumer declared in apiKey.secretRef's Secret.
	Secret string `json:"secret,omitempty"`
}

// Consumers lists the consumers the SecurityPolicies of s declare, in the
// policies' order and each policy's declaration order (API keys, Secret
// consumers, basic-auth users, JWT consumers). Never a key, hash or
// password.
func (s *Set) Consumers() []Consumer {
	var out []Consumer
	if s == nil {
		return out
	}
	for _, sp := range s.SecurityPolicies {
		c := Consumer{Namespace: orDefaultNamespace(sp.Namespace), Policy: sp.Name}
		add := func(kind, name string, set func(*Consumer)) {
			one := c
			one.Kind, one.Name = kind, name
			if set != nil {
				set(&one)
			}
			out = append(out, one)
		}
		if k := sp.Spec.APIKey; k != nil {
			for _, a := range k.Consumers {
				add("apikey", a.Name, nil)
			}
			for _, a := range k.SecretConsumers {
				add("apikey", a.Name, func(c *Consumer) {
					if k.SecretRef != nil {
						c.Secret = k.SecretRef.Name
					}
				})
			}
		}
		if b := sp.Spec.BasicAuth; b != nil {
			for line := range strings.SplitSeq(b.Htpasswd, "\n") {
				line = strings.TrimSpace(line)
				if user, _, ok := strings.Cut(line, ":"); ok && user != "" && !strings.HasPrefix(line, "#") {
					add("basic", user, nil)
				}
			}
		}
		if j := sp.Spec.JWT; j != nil {
			for _, p := range j.Providers {
				for _, jc := range p.Consumers {
					add("jwt", jc.Name, func(c *Consumer) { c.Provider, c.Subject = p.Name, jc.Subject })
				}
			}
		}
	}
	return out
}
