-- Test driver: runs the REAPER script in the fake REAPER on one scenario and writes a JSON report.
--
--   lua5.4 run_scenario.lua SCENARIO.lua
--
-- SCENARIO.lua returns a table: `script` (the .lua to run), `report` (where the JSON goes), `runs`
-- (how many times the action is run in a row, default 1), `timeout` (simulated seconds per run), and
-- the project, answers and events that fake_reaper.lua documents.

local here = arg[0]:match("^(.*)[/\\]") or "."
local Fake = dofile(here .. "/fake_reaper.lua")

local scenario = dofile(assert(arg[1], "usage: run_scenario.lua SCENARIO.lua"))
local fake = Fake.new(scenario)
reaper = fake.reaper
gfx = fake.gfx

for _ = 1, scenario.runs or 1 do
  fake:run_instance(scenario.script)
  fake:loop(scenario.script, scenario.timeout or 120)
end

local out = assert(io.open(scenario.report, "wb"))
out:write(fake:report())
out:close()
