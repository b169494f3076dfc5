-- peeklock.metrics' labels outside nginx: the module needs only an ngx table with a
-- shared-dict list to load, and its label builder is pure. The destination and
-- subscription of an entity are the core's rule (pl_entity_destination), the same as
-- Python's telemetry: the service's entity paths are case-insensitive.
describe("peeklock.metrics labels (" .. (jit and jit.version or _VERSION) .. ")", function()
  local saved_ngx, metrics

  setup(function()
    saved_ngx = rawget(_G, "ngx")
    _G.ngx = { shared = {}, now = os.time }
    package.loaded["peeklock.metrics"] = nil
    metrics = require "peeklock.metrics"
  end)

  teardown(function()
    package.loaded["peeklock.metrics"] = nil
    _G.ngx = saved_ngx
  end)

  local function destination(entity)
    local l = metrics._labels(nil, nil, entity)
    return l:match('messaging_destination_name="([^"]*)"'),
           l:match('messaging_destination_subscription_name="([^"]*)"')
  end

  it("splits a subscription's path, its 'subscriptions' segment in any case", function()
    for _, entity in ipairs({ "orders/subscriptions/s", "orders/SUBSCRIPTIONS/s", "orders/Subscriptions/s/$DeadLetterQueue" }) do
      local name, sub = destination(entity)
      assert.equal("orders", name, entity)
      assert.equal("s", sub, entity)
    end
  end)

  it("keeps any other entity whole, with no subscription", function()
    for _, entity in ipairs({ "q", "q/$DeadLetterQueue", "orders/subscription/s", "orders/subscriptions/" }) do
      local name, sub = destination(entity)
      assert.equal(entity, name)
      assert.is_nil(sub, entity)
    end
  end)
end)
