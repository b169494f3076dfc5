// Drives the official Go admin client (github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin)
// through a full scenario against a peeklock emulator served over HTTPS:
//
//	go run . CONNECTION_STRING
//
// The emulator's certificate is trusted through SSL_CERT_FILE (set by the test). Messages are put
// in place with plain REST calls (the SDK's data plane speaks AMQP). Prints a JSON summary; any
// mismatch exits with status 1.
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

var (
	fields = map[string]string{}
	base   string
	ctx    = context.Background()
)

func check(ok bool, format string, args ...any) {
	if !ok {
		fmt.Fprintf(os.Stderr, "FAILED: "+format+"\n", args...)
		os.Exit(1)
	}
}

func must[T any](v T, err error) T {
	check(err == nil, "%v", err)
	return v
}

func sas(uri string) string {
	se := time.Now().Unix() + 600
	sr := url.QueryEscape(uri)
	mac := hmac.New(sha256.New, []byte(fields["SharedAccessKey"]))
	fmt.Fprintf(mac, "%s\n%d", sr, se)
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return fmt.Sprintf("SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s", sr, url.QueryEscape(sig), se,
		fields["SharedAccessKeyName"])
}

func rest(method, path, body string, headers map[string]string, expect int) *http.Response {
	req := must(http.NewRequest(method, base+path, strings.NewReader(body)))
	req.Header.Set("Authorization", sas(base+path))
	for k, v := range headers {
		req.Header[k] = []string{v}
	}
	resp := must(http.DefaultClient.Do(req))
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check(expect == 0 || resp.StatusCode == expect, "%s %s: %d %s", method, path, resp.StatusCode, data)
	return resp
}

func send(entity, body string, props map[string]any, custom map[string]string) {
	h := map[string]string{"Content-Type": "text/plain"}
	if props != nil {
		h["BrokerProperties"] = string(must(json.Marshal(props)))
	}
	for k, v := range custom {
		h[k] = v
	}
	rest("POST", "/"+entity+"/messages", body, h, 201)
}

func emulatorNow() time.Time {
	resp := must(http.Get(base + "/$admin/clock"))
	defer resp.Body.Close()
	var c struct{ Now float64 }
	check(json.NewDecoder(resp.Body).Decode(&c) == nil, "clock")
	return time.Unix(int64(c.Now), 0).UTC()
}

func advance(seconds int) {
	resp := must(http.Post(base+"/$admin/clock/advance", "application/json",
		bytes.NewBufferString(fmt.Sprintf(`{"seconds": %d}`, seconds))))
	resp.Body.Close()
}

func main() {
	conn := os.Args[1]
	for _, p := range strings.Split(conn, ";") {
		if k, v, ok := strings.Cut(p, "="); ok {
			fields[k] = v
		}
	}
	base = "https://" + strings.TrimSuffix(strings.SplitN(fields["Endpoint"], "://", 2)[1], "/")
	c := must(admin.NewClientFromConnectionString(conn, nil))
	out := map[string]any{}

	ns := must(c.GetNamespaceProperties(ctx, nil))
	check(ns.SKU == "Standard" && !ns.CreatedTime.IsZero(), "namespace %+v", ns)
	out["namespace"] = ns.Name

	// queue
	qn := "go-adm-q"
	q := must(c.CreateQueue(ctx, qn, &admin.CreateQueueOptions{Properties: &admin.QueueProperties{
		LockDuration: to.Ptr("PT30S"), MaxDeliveryCount: to.Ptr[int32](1), UserMetadata: to.Ptr("first"),
		RequiresDuplicateDetection: to.Ptr(true), DuplicateDetectionHistoryTimeWindow: to.Ptr("PT2M"),
		AutoDeleteOnIdle: to.Ptr("P2D")}}))
	check(*q.LockDuration == "PT30S" && !*q.EnablePartitioning && *q.UserMetadata == "first", "create queue %+v", q)
	got := must(c.GetQueue(ctx, qn, nil))
	check(got != nil, "get queue")
	got.LockDuration = to.Ptr("PT45S")
	must(c.UpdateQueue(ctx, qn, got.QueueProperties, nil))
	check(*must(c.GetQueue(ctx, qn, nil)).LockDuration == "PT45S", "update queue")
	missing, err := c.GetQueue(ctx, "go-no-such-queue", nil)
	check(err == nil && missing == nil, "missing queue: %v %v", missing, err)

	send(qn, "to-dlq", map[string]any{"MessageId": "m-dlq"}, nil)
	locked := rest("POST", "/"+qn+"/messages/head?timeout=5", "", nil, 201)
	rest("PUT", must(url.Parse(locked.Header.Get("Location"))).Path, "", nil, 200)
	send(qn, "active", map[string]any{"MessageId": "m-active"}, nil)
	send(qn, "active again", map[string]any{"MessageId": "m-active"}, nil)
	send(qn, "later", map[string]any{"MessageId": "m-sched",
		"ScheduledEnqueueTimeUtc": emulatorNow().Add(30 * time.Minute).Format(http.TimeFormat)}, nil)
	rt := must(c.GetQueueRuntimeProperties(ctx, qn, nil))
	out["queueCounts"] = []int64{int64(rt.ActiveMessageCount), int64(rt.DeadLetterMessageCount),
		int64(rt.ScheduledMessageCount), rt.TotalMessageCount, int64(rt.TransferMessageCount)}
	check(!rt.CreatedAt.IsZero() && rt.CreatedAt.Location() == time.UTC, "created at %v", rt.CreatedAt)

	// list past 100 in pages of 30
	for i := 0; i < 101; i++ {
		must(c.CreateQueue(ctx, fmt.Sprintf("go-bulk-%03d", i), nil))
	}
	pages := []int{}
	names := map[string]bool{}
	pager := c.NewListQueuesPager(&admin.ListQueuesOptions{MaxPageSize: 30})
	for pager.More() {
		page := must(pager.NextPage(ctx))
		pages = append(pages, len(page.Queues))
		for _, item := range page.Queues {
			names[item.QueueName] = true
		}
	}
	out["queuePages"] = pages
	out["listedQueues"] = len(names)
	rtPager := c.NewListQueuesRuntimePropertiesPager(nil)
	total := 0
	for rtPager.More() {
		total += len(must(rtPager.NextPage(ctx)).QueueRuntimeProperties)
	}
	out["listedRuntime"] = total
	for i := 0; i < 101; i++ {
		must(c.DeleteQueue(ctx, fmt.Sprintf("go-bulk-%03d", i), nil))
	}

	// topic, subscriptions, rules
	tn := "go-adm-t"
	must(c.CreateTopic(ctx, tn, &admin.CreateTopicOptions{Properties: &admin.TopicProperties{
		DefaultMessageTimeToLive: to.Ptr("PT2H"), UserMetadata: to.Ptr("topic meta")}}))
	t := must(c.GetTopic(ctx, tn, nil))
	t.DefaultMessageTimeToLive = to.Ptr("PT3H")
	must(c.UpdateTopic(ctx, tn, t.TopicProperties, nil))
	check(*must(c.GetTopic(ctx, tn, nil)).DefaultMessageTimeToLive == "PT3H", "update topic")
	must(c.CreateSubscription(ctx, tn, "Sub1", &admin.CreateSubscriptionOptions{Properties: &admin.SubscriptionProperties{
		MaxDeliveryCount: to.Ptr[int32](5), UserMetadata: to.Ptr("sub meta")}}))
	must(c.CreateSubscription(ctx, tn, "Sub2", nil))
	s1 := must(c.GetSubscription(ctx, tn, "Sub1", nil))
	s1.MaxDeliveryCount = to.Ptr[int32](7)
	must(c.UpdateSubscription(ctx, tn, "Sub1", s1.SubscriptionProperties, nil))
	check(*must(c.GetSubscription(ctx, tn, "Sub1", nil)).MaxDeliveryCount == 7, "update subscription")
	subs := []string{}
	sp := c.NewListSubscriptionsPager(tn, nil)
	for sp.More() {
		for _, s := range must(sp.NextPage(ctx)).Subscriptions {
			subs = append(subs, s.SubscriptionName)
		}
	}
	out["subscriptions"] = subs

	must(c.CreateRule(ctx, tn, "Sub2", &admin.CreateRuleOptions{Name: to.Ptr("sql"),
		Filter: &admin.SQLFilter{Expression: "color = @c", Parameters: map[string]any{"@c": "blue"}},
		Action: &admin.SQLAction{Expression: "SET sys.Label = 'was-blue'"}}))
	must(c.CreateRule(ctx, tn, "Sub2", &admin.CreateRuleOptions{Name: to.Ptr("corr"),
		Filter: &admin.CorrelationFilter{CorrelationID: to.Ptr("cid"), Subject: to.Ptr("L"),
			ApplicationProperties: map[string]any{"kind": "green", "n": int64(7), "ok": true}}}))
	must(c.CreateRule(ctx, tn, "Sub2", &admin.CreateRuleOptions{Name: to.Ptr("all"), Filter: &admin.TrueFilter{}}))
	must(c.CreateRule(ctx, tn, "Sub2", &admin.CreateRuleOptions{Name: to.Ptr("none"), Filter: &admin.FalseFilter{}}))
	must(c.DeleteRule(ctx, tn, "Sub2", "$Default", nil))
	r := must(c.GetRule(ctx, tn, "Sub2", "sql", nil))
	sf, ok := r.Filter.(*admin.SQLFilter)
	check(ok && sf.Expression == "color = @c" && reflect.DeepEqual(sf.Parameters, map[string]any{"@c": "blue"}),
		"sql rule %#v", r.Filter)
	sa, ok := r.Action.(*admin.SQLAction)
	check(ok && sa.Expression == "SET sys.Label = 'was-blue'", "sql action %#v", r.Action)
	cr := must(c.GetRule(ctx, tn, "Sub2", "corr", nil))
	cf, ok := cr.Filter.(*admin.CorrelationFilter)
	check(ok && *cf.CorrelationID == "cid" && *cf.Subject == "L" && cf.ApplicationProperties["kind"] == "green" &&
		cf.ApplicationProperties["ok"] == true, "correlation rule %#v", cr.Filter)
	cf.ApplicationProperties["kind"] = "teal"
	must(c.UpdateRule(ctx, tn, "Sub2", cr.RuleProperties))
	cf2 := must(c.GetRule(ctx, tn, "Sub2", "corr", nil)).Filter.(*admin.CorrelationFilter)
	check(cf2.ApplicationProperties["kind"] == "teal", "updated correlation %#v", cf2.ApplicationProperties)
	_, isTrue := must(c.GetRule(ctx, tn, "Sub2", "all", nil)).Filter.(*admin.TrueFilter)
	_, isFalse := must(c.GetRule(ctx, tn, "Sub2", "none", nil)).Filter.(*admin.FalseFilter)
	check(isTrue && isFalse, "true/false filters")
	rulePages := [][]string{}
	rp := c.NewListRulesPager(tn, "Sub2", &admin.ListRulesOptions{MaxPageSize: 3})
	for rp.More() {
		names := []string{}
		for _, x := range must(rp.NextPage(ctx)).Rules {
			names = append(names, x.Name)
		}
		rulePages = append(rulePages, names)
		check(len(rulePages) < 10, "the rules pager does not end")
	}
	out["rulePages"] = rulePages
	allRules := 0
	rp = c.NewListRulesPager(tn, "Sub2", nil)
	for rp.More() {
		allRules += len(must(rp.NextPage(ctx)).Rules)
		check(allRules < 100, "the rules pager does not end")
	}
	out["allRules"] = allRules
	must(c.DeleteRule(ctx, tn, "Sub2", "all", nil))

	send(tn, "blue one", map[string]any{"Label": "orig"}, map[string]string{"color": `"blue"`})
	rec := rest("DELETE", "/"+tn+"/subscriptions/Sub2/messages/head?timeout=5", "", nil, 200)
	var bp map[string]any
	check(json.Unmarshal([]byte(rec.Header.Get("BrokerProperties")), &bp) == nil, "bp")
	out["actionLabel"] = bp["Label"]

	send(tn, "scheduled", map[string]any{"ScheduledEnqueueTimeUtc": emulatorNow().Add(time.Hour).Format(http.TimeFormat)}, nil)
	trt := must(c.GetTopicRuntimeProperties(ctx, tn, nil))
	sub1 := must(c.GetSubscriptionRuntimeProperties(ctx, tn, "Sub1", nil))
	topic := map[string]any{"scheduled": trt.ScheduledMessageCount, "subscriptionCount": trt.SubscriptionCount,
		"sqlFilters": trt.SQLFilterCount, "correlationFilters": trt.CorrelationFilterCount,
		"sub1Before": sub1.ActiveMessageCount}
	advance(3700)
	topic["scheduledAfter"] = must(c.GetTopicRuntimeProperties(ctx, tn, nil)).ScheduledMessageCount
	topic["sub1After"] = must(c.GetSubscriptionRuntimeProperties(ctx, tn, "Sub1", nil)).ActiveMessageCount
	out["topic"] = topic

	must(c.DeleteSubscription(ctx, tn, "Sub2", nil))
	must(c.DeleteTopic(ctx, tn, nil))
	must(c.DeleteQueue(ctx, qn, nil))
	gone, err := c.GetTopic(ctx, tn, nil)
	check(err == nil && gone == nil, "topic after delete: %v %v", gone, err)
	out["done"] = true
	fmt.Println(string(must(json.Marshal(out))))
}
