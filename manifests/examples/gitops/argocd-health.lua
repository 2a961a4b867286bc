-- Argo CD health of a MoltmateUser, from what the operator writes: status.observedGeneration
-- and the kstatus conditions Ready, Reconciling and Stalled, read in kstatus's order (the
-- one Flux and `kubectl wait` follow). Argo CD runs it with gopher-lua (Lua 5.1) without the
-- string and math libraries: plain `..` only.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

-- A status written for an older spec says nothing about this one.
local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = {}
for _, condition in ipairs(status.conditions) do
  conditions[condition.type] = condition
end

local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end

-- "Failed: namespace moltmate-bob already exists and ...": the phase, then the message.
local function says(type)
  local text = status.phase or ""
  local message = conditions[type] and conditions[type].message
  if message ~= nil and message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. message
  end
  return text
end

if holds("Stalled") then
  hs.status = "Degraded"
  hs.message = says("Stalled")
  return hs
end
if holds("Reconciling") then
  hs.status = "Progressing"
  hs.message = says("Reconciling")
  return hs
end
-- Ready holds for Idle users (asleep until their next message) and for Suspended ones
-- (spec.suspend: true) too. Both are the state git asks for, so Healthy rather than Argo CD's
-- Suspended: a sync with waves or hooks waits until each resource is Healthy or Degraded, so
-- one suspended person would hold every such sync open, and Suspended would also become the
-- whole Application's health.
if holds("Ready") then
  hs.status = "Healthy"
  hs.message = says("Ready")
  return hs
end
hs.status = "Progressing"
hs.message = says("Ready")
return hs
