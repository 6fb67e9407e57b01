# The guest side that the VirtualBox harnesses fake (virtualbox_up.rb,
# virtualbox_package.rb), so that Vagrant's own actions run against the fake
# VBoxManage: a communicator that is always ready and whose every command succeeds,
# and a guest that records the capabilities Vagrant asks of it.

class ReadyCommunicator
  def ready? = true
  def wait_for_ready(_timeout) = true
  def execute(*_args, **_opts) = 0
  def sudo(*_args, **_opts) = 0
  def test(*_args, **_opts) = true
end

# Given its machine, the guest shuts down when asked to halt, the way a guest's own
# shutdown would: VirtualBox then reports the machine powered off.
class RecordingGuest
  attr_reader :calls

  def initialize(machine = nil)
    @machine = machine
    @calls = []
  end

  def ready? = true
  def detect! = nil
  def name = :debian
  def capability?(_name) = true

  def capability(name, *args)
    @calls << { capability: name, args: args }
    @machine.provider.driver.halt if @machine && name == :halt
    nil
  end
end
