-- wrk script: GET /api/orders/{id} with a random seeded order id (the seed has ids 1..100000).
-- Each wrk thread seeds its own generator, so threads do not repeat the same sequence.
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", os.time() * 100 + counter)
end

function init(args)
  math.randomseed(seed)
end

function request()
  return wrk.format("GET", "/api/orders/" .. math.random(1, 100000))
end
