require('../lib/isolation')('d', 3)
